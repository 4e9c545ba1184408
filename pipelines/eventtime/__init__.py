"""Event time: watermark sentinels, per-partition watermarks and idleness, and the one injected clock."""
