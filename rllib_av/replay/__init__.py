"""The replay: episode chunks (what crosses the network), device-resident
storage, sampling, the write-ahead journal, reward processing.

Imports neither the TD3 learner nor RLlib's learner modules; the TD3 Learner
owns a storage shard and a sampler, the driver the journal and the reward
statistics.
"""
