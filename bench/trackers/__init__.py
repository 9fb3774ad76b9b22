"""Measurement: memory (torch allocator, NVML, RSS) and step time. Methods never measure."""
