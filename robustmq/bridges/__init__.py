"""Front-ends for the protocols other than NATS, one package each.

Every bridge translates its protocol's names to subjects at its edge and talks to the router and store only.
"""
