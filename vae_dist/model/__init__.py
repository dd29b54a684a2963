"""The model room: the networks and the math of the objective (ELBO, likelihoods, IWAE bound).

Functions here take the values they need (tensors, likelihood name, beta), not a config.
"""
