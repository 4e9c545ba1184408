"""The delivery checker: what a run wrote, against what it should have, per delivery guarantee."""
