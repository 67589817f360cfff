"""The guard stage (pure): the champion (choice, canary), whole-history training, paper trading,
monitoring, the drift and expectancy rules."""
