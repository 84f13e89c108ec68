# Augmenting declarations of router/engine/agents.py (see setup.py).
cdef class AgentRuntime:
    cdef public object spec
    cdef public long slot
    cdef public object state
    cdef public object since
    cdef public object reason
    cdef public object call_id
    cdef public object deferred
    cdef public long calls_handled
    cdef public double busy_s
    cdef public double idle_s
    cdef public long wrap_token
    cdef public object wrap_until
    cdef public set queues
    cdef public str id
    cdef public object team
    cdef public str endpoint
