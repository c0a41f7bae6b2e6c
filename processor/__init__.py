"""The stream processor: the pure core (``core``) and the Faust worker (``worker``)."""
