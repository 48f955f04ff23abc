"""Helpers the tests share: service processes, certificates, fakes, reference decoders."""
