"""PPO for ksim with an auto-tuned entropy temperature: task mixins, temperature, entropy matching, checkpoints."""
