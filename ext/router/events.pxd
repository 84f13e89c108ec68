# Augmenting declarations of router/events.py, compiled in place (see setup.py): Event as an
# extension type with its fields in C slots.  They stay Python objects, unchecked, so that the
# compiled Event accepts what its pure-Python twin accepts (the writer refuses a bad one).
cimport cython


cdef class Event:
    cdef public object ts
    cdef public object type
    cdef public object call_id
    cdef public object queue
    cdef public object agent
    cdef public object data
    cdef public object serial


cpdef double round_ms(double seconds)

@cython.locals(event=Event)
cpdef Event new_event(ts, type_, call_id, queue, agent, data)
