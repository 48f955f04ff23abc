"""Patterns: a log message -> its pattern, variable parts masked as `<*>` (masker), patterns
that differ in a few words merged over a set (merge), structured bodies by their shape.

May import: the top modules only (config, errors, clock, telemetry, health) and the generated
protos. Pure: no I/O, no clock, no learned state, so every replica gets the same patterns.
"""
