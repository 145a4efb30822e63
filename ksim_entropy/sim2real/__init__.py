"""CPU tooling that training never imports: the gate simulator, simulated logs, the replay and the fit."""
