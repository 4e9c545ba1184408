"""A pipeline compiled (the plan, the topology of its inputs) and the stage chain the actors host (ARCHITECTURE.md
section 3)."""
