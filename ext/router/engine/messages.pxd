# Augmenting declarations of router/engine/messages.py (see setup.py): the messages of every
# simulated call as extension types; frozen still (read-only fields).  The rest stay Python classes.
cdef class CallQueued:
    cdef readonly object call_id
    cdef readonly object queue
    cdef readonly object caller_id
    cdef readonly object priority
    cdef readonly object skills
    cdef readonly object data


cdef class CallerHungUp:
    cdef readonly object call_id


cdef class AgentAnswered:
    cdef readonly object call_id
    cdef readonly object agent


cdef class CallFinished:
    cdef readonly object call_id


cdef class OfferCall:
    cdef readonly object call_id
    cdef readonly object agent
    cdef readonly object endpoint
    cdef readonly object queue
    cdef readonly object ring_timeout_s


cdef class CancelOffer:
    cdef readonly object call_id
    cdef readonly object agent
