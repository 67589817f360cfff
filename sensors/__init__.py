"""The production guard's sensors and jobs (issue "Production guard, part 2")."""
