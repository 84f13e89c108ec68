# Augmenting declarations of router/engine/engine.py (see setup.py): the engine and its live
# records as extension types with C fields.  The .py stays the pure-Python twin.
from router.engine.agents cimport AgentRuntime
from router.events cimport new_event, round_ms
from router.engine.messages cimport AgentAnswered, CallFinished, CallQueued
cimport cython


cdef class CallbackState:
    cdef public str number
    cdef public double accepted_at
    cdef public long attempts
    cdef public bint customer_up
    cdef public object due_at


cdef class CallRuntime:
    cdef public str call_id
    cdef public str entry_queue
    cdef public str queue
    cdef public str caller_id
    cdef public long priority
    cdef public dict extra_skills
    cdef public double joined_at
    cdef public double queue_joined_at
    cdef public long seq
    cdef public list requirement_sets
    cdef public object slot
    cdef public object agent
    cdef public object connected_at
    cdef public long next_step
    cdef public long token
    cdef public long moves
    cdef public set copied_to
    cdef public CallbackState callback
    cdef public bint callback_offered


cdef class Engine:
    cdef public object centre
    cdef public dict _skill_index
    cdef public dict _queue_index
    cdef public object matcher
    cdef public dict agents
    cdef public list _agent_by_slot
    cdef public dict calls
    cdef public dict _call_by_slot
    cdef public list _free_slots
    cdef public dict _waiting
    cdef public dict _aht
    cdef public dict _callback_hours
    cdef public dict _logged_in
    cdef public dict _staffed
    cdef public list _timers
    cdef public long _timer_seq
    cdef public long _call_seq
    cdef public dict _pending_callbacks
    cdef public list _woken
    cdef public double _clock
    cdef public list _out
    cdef public object _queues

    # inputs of every simulated call (cpdef: the handler table calls them from Python)
    @cython.locals(call=CallRuntime, agent=AgentRuntime)
    cpdef _on_agent_answered(self, AgentAnswered msg, double now)
    @cython.locals(call=CallRuntime)
    cpdef _on_call_finished(self, CallFinished msg, double now)

    # the hot path, called directly in C (so by position: a C call cannot take keywords)
    cdef _join(self, CallQueued msg, double now)
    cdef _start_waiting(self, CallRuntime call, double now)
    cdef _connect(self, CallRuntime call, AgentRuntime agent, double now)
    cdef _schedule(self, double when, str kind, str key, token)
    @cython.locals(call=CallRuntime, agent=AgentRuntime)
    cdef bint _timer_live(self, str kind, str key, token)
    @cython.locals(call=CallRuntime, agent=AgentRuntime)
    cdef _fire(self, str kind, str key, token, double when)
    cdef _wait(self, CallRuntime call, double now)
    cdef _unwait(self, CallRuntime call)
    cdef list _matcher_sets(self, CallRuntime call)
    cdef _route_call(self, CallRuntime call, double now)
    cdef _route_agent(self, AgentRuntime agent, double now)
    cdef _offer(self, CallRuntime call, AgentRuntime agent, double now)
    @cython.locals(agent=AgentRuntime)
    cdef _finish_connected(self, CallRuntime call, double now)
    cdef _schedule_steps(self, CallRuntime call, queue)
    cdef bint _parked(self, CallRuntime call, double now)
    cdef _transition(self, AgentRuntime agent, str action, double now, str call_id=*, str reason=*)
    cdef _enter(self, AgentRuntime agent, state, double now, str call_id, str reason)
    cdef _count_staffing(self, AgentRuntime agent, previous, state)
    cdef _emit(self, double now, str type_, CallRuntime call, str agent, dict data)
    cdef list _take_output(self)
    cdef _queue(self, str queue_id)
