"""Everything K-Bot: robot files and constants, the actor-critic, fitted ranges and the walking/standing task."""
