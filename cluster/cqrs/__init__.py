"""CQRS on eventray: the query router (reads served by the actors that own the state), the command gateway
(writes with a reply and a read-your-writes token), their Python client and the ``eventray cqrs`` commands."""
