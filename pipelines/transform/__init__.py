"""Expressions and the stateless operators (filter, select, derive, mask), failing rows found by bisection."""
