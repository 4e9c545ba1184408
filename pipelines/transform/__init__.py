"""Expressions and the stateless operators (filter, select, derive, mask, upcast), failing rows found by bisection."""
