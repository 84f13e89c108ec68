# Augmenting declarations of router/sim/simulator.py (see setup.py).
from router.engine.engine cimport Engine
cimport router.sim.traffic as traffic
from router.events cimport Event, new_event
from router.engine.messages cimport OfferCall


cdef class Simulator:
    cdef public object flowset
    cdef public object seed
    cdef public object _callers
    cdef public dict _sessions
    cdef public object centre
    cdef public object model
    cdef public double hours
    cdef public Engine engine
    cdef public object zone
    cdef public double start
    cdef public double clock
    cdef public long refused
    cdef public object _handle_rng
    cdef public object _patience_rng
    cdef public object _answer_rng
    cdef public list _agenda
    cdef public list _patience
    cdef public long _seq
    cdef public dict _ringing
    cdef public set _live
    cdef public set _talking
    cdef public object days
    cdef public list arrivals
    cdef public object _survey_rng
    cdef public object _callback_rng
    cdef public set _callbacks
    cdef public long _next_arrival

    # the hot path, called directly in C (by position)
    cdef _step(self, list events, engine_at)
    cpdef _at(self, double when, str kind, payload)     # cpdef: tests plant happenings with it
    cdef _push_arrival(self)
    cdef list _input(self, message, double now)
    cdef _start_talk(self, str call_id, str queue, double now)
    cdef _wait_patiently(self, str call_id, str queue, double now)
    cdef list _enqueue(self, queued, double now)
    cdef _carry_out(self, list outputs, list events)
    # happenings of every call (cpdef: the happenings table calls them from Python)
    cpdef list _arrive(self, payload, double now, list events)
    cpdef list _answer(self, payload, double now, list events)
    cpdef list _hang_up(self, str call_id, double now, list events)
    cdef _record(self, Event event, list events)
    cdef _ring(self, OfferCall offer)
