# Augmenting declarations of router/sim/traffic.py, compiled in place (see setup.py): an arrival
# as an extension type (frozen: read-only fields), the draws of every simulated call as C calls.
cdef class Arrival:
    cdef readonly object offset_s
    cdef readonly object queue
    cdef readonly object caller_id


cpdef double exponential(rng, double rate) except? -1.0
cpdef below(rng, n)
cpdef double sample(dist, rng) except? -1.0
cpdef for_queue(table, str queue)
