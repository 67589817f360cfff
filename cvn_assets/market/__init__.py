"""The market stage (pure): candles (CSV, synthetic) -> features, the fill rule, triple-barrier
labels, the dataset, purged folds."""
