"""judicator-policy: per-domain policy thresholds learned from a host's own history, and a
backtest that replays that history against candidate thresholds
(docs/policies.md#learned-thresholds).
"""
