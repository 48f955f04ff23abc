"""One service across several cores: a supervisor, its serving processes, and their link.

May import the service and every stage it wires (receiving, counting, reporting, store, operating).
"""
