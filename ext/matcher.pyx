# cython: language_level=3
"""The compiled skills matcher (router.engine.cmatcher).

It makes exactly the decisions of the reference router.engine.matcher_ref,
which states the rules; ext/matcher.pyi is the contract both follow.

Theory of operation
-------------------
All state is plain C data allocated once in __cinit__ (structs in matcher.pxd):
an array of AgentRec (a 256-bit skill set, proficiency[256], availability,
idle_since, counters) and an array of CallRec (queue, priority, enqueued_at,
seq, weight and up to 8 requirement sets of up to 16 (skill, minimum) pairs).
Each requirement set also keeps the bitset of the skills it names, so most
ineligible agents are rejected with four AND/compare operations before any
proficiency is read.

Available agents and waiting calls are also kept in dense slot lists (swap-
remove through a position index), so a decision scans only candidates.  The
dense lists are in no particular order, so every choice compares a complete key
ending in the slot, which makes the answer independent of list order:

  longest-idle / most-skilled / least-occupied / fewest-calls: the smallest
      (strategy key, idle_since, slot); a candidate's eligibility is tested only
      when its key would beat the best so far (except most-skilled, whose key
      is the eligibility score);
  round-robin: the smallest cyclic distance from the queue's cursor;
  random: eligible agents are marked in a scratch bitmap over slots, then the
      r-th set bit (r = xorshift64* draw % count) is found with popcounts,
      i.e. the r-th eligible agent in slot order, as in the reference;
  pick_call: the largest (priority, weighted wait), then smallest (seq, slot).

The decision loops are nogil functions over these arrays: no Python object, no
allocation.  Arguments are validated at the Python boundary, in parameter
order, raising the same exception types as the reference.
"""
from cpython.number cimport PyNumber_AsSsize_t, PyNumber_Index
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.math cimport isfinite
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from matcher cimport (C_MAX_PAIRS, C_MAX_SETS, C_MAX_SKILLS, SKILL_WORDS, AgentRec, CallRec,
                      RequirementSet)

cdef extern from *:
    """
    static inline int acd_popcount64(uint64_t x) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_popcountll(x);
    #else
        int n = 0;
        while (x) { x &= x - 1; n++; }
        return n;
    #endif
    }
    static inline int acd_ctz64(uint64_t x) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctzll(x);
    #else
        int n = 0;
        while (!(x & 1)) { x >>= 1; n++; }
        return n;
    #endif
    }
    """
    int acd_popcount64(uint64_t x) noexcept nogil
    int acd_ctz64(uint64_t x) noexcept nogil

LONGEST_IDLE = 0
MOST_SKILLED = 1
LEAST_OCCUPIED = 2
ROUND_ROBIN = 3
FEWEST_CALLS = 4
RANDOM = 5
MAX_SKILLS = C_MAX_SKILLS
MAX_PAIRS_PER_SET = C_MAX_PAIRS
MAX_SETS_PER_CALL = C_MAX_SETS

cdef enum:
    S_LONGEST_IDLE = 0
    S_MOST_SKILLED = 1
    S_LEAST_OCCUPIED = 2
    S_ROUND_ROBIN = 3
    S_FEWEST_CALLS = 4
    S_RANDOM = 5
    MAX_PROFICIENCY = 10

cdef Py_ssize_t MAX_CAPACITY = 2**31 - 1
cdef Py_ssize_t INT64_MAX = 2**63 - 1
cdef object MASK64 = 2**64 - 1
cdef object SEED_MIX = 0x9E3779B97F4A7C15   # seed ^ SEED_MIX is the generator's first state
cdef uint64_t XORSHIFT_MULTIPLIER = 0x2545F4914F6CDD1D


# ---- argument checks (Python boundary) --------------------------------------

cdef Py_ssize_t _index(object value, Py_ssize_t capacity, str what) except -1:
    """`value` as a table index, IndexError unless 0 <= value < capacity."""
    cdef Py_ssize_t index = PyNumber_AsSsize_t(value, IndexError)
    if index < 0 or index >= capacity:
        raise IndexError(f"{what} {index} out of range 0..{capacity - 1}")
    return index


cdef Py_ssize_t _int_in(object value, Py_ssize_t low, Py_ssize_t high, str what) except? -1:
    number = PyNumber_Index(value)
    if not low <= number <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {number}")
    return number


cdef double _finite(object value, str what) except? -1.0:
    cdef double number = value
    if not isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


cdef double _weight(object value) except? -1.0:
    cdef double weight = _finite(value, "weight")
    if weight < 0.0:
        raise ValueError(f"weight must not be negative, got {weight}")
    return weight


# ---- eligibility and scores (nogil) -----------------------------------------

cdef inline bint _meets(const AgentRec* agent, const RequirementSet* rs) noexcept nogil:
    cdef int i
    for i in range(SKILL_WORDS):
        if (agent.skills[i] & rs.required[i]) != rs.required[i]:
            return False
    for i in range(rs.n_pairs):
        if agent.proficiency[rs.skill[i]] < rs.minimum[i]:
            return False
    return True


cdef inline bint _eligible(const AgentRec* agent, const CallRec* call) noexcept nogil:
    cdef int k
    for k in range(call.n_sets):
        if _meets(agent, &call.sets[k]):
            return True
    return False


cdef inline int _best_score(const AgentRec* agent, const CallRec* call) noexcept nogil:
    """Proficiency sum over the best set the agent meets; -1 if it meets none."""
    cdef int k, i, score
    cdef int best = -1
    cdef const RequirementSet* rs
    for k in range(call.n_sets):
        rs = &call.sets[k]
        if _meets(agent, rs):
            score = 0
            for i in range(rs.n_pairs):
                score += agent.proficiency[rs.skill[i]]
            if score > best:
                best = score
    return best


cdef inline uint64_t _next_random(uint64_t* state) noexcept nogil:
    """xorshift64*, bit for bit the reference's generator."""
    cdef uint64_t x = state[0]
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    state[0] = x
    return x * XORSHIFT_MULTIPLIER


# ---- decisions (nogil) ------------------------------------------------------

cdef int _choose_by_key(const AgentRec* agents, const int32_t* slots, Py_ssize_t n,
                        const CallRec* call, int strategy) noexcept nogil:
    """Smallest (int key, double key, idle_since, slot) among eligible agents."""
    cdef Py_ssize_t j
    cdef int32_t slot
    cdef int best = -1
    cdef int64_t ikey = 0, best_ikey = 0
    cdef double dkey = 0.0, best_dkey = 0.0, best_idle = 0.0
    cdef int score
    cdef const AgentRec* agent
    for j in range(n):
        slot = slots[j]
        agent = &agents[slot]
        if strategy == S_MOST_SKILLED:
            score = _best_score(agent, call)
            if score < 0:
                continue
            ikey = -score
        elif strategy == S_LEAST_OCCUPIED:
            dkey = agent.occupancy
        elif strategy == S_FEWEST_CALLS:
            ikey = agent.calls_handled
        if best >= 0:
            if ikey > best_ikey:
                continue
            if ikey == best_ikey:
                if dkey > best_dkey:
                    continue
                if dkey == best_dkey:
                    if agent.idle_since > best_idle:
                        continue
                    if agent.idle_since == best_idle and slot > best:
                        continue
        if strategy != S_MOST_SKILLED and not _eligible(agent, call):
            continue
        best, best_ikey, best_dkey, best_idle = slot, ikey, dkey, agent.idle_since
    return best


cdef int _choose_round_robin(const AgentRec* agents, const int32_t* slots, Py_ssize_t n,
                             const CallRec* call, int32_t cursor,
                             Py_ssize_t capacity) noexcept nogil:
    """The eligible slot at the smallest cyclic distance after `cursor`."""
    cdef Py_ssize_t j, distance
    cdef Py_ssize_t best_distance = capacity
    cdef int32_t slot
    cdef int best = -1
    for j in range(n):
        slot = slots[j]
        distance = slot - cursor - 1
        if distance < 0:
            distance += capacity
        if distance < best_distance and _eligible(&agents[slot], call):
            best, best_distance = slot, distance
    return best


cdef int _choose_random(const AgentRec* agents, const int32_t* slots, Py_ssize_t n,
                        const CallRec* call, uint64_t* bits, Py_ssize_t capacity,
                        uint64_t* rng_state) noexcept nogil:
    """The r-th eligible agent in slot order, r drawn once when any is eligible."""
    cdef Py_ssize_t j, word
    cdef Py_ssize_t n_words = (capacity + 63) >> 6
    cdef uint64_t count = 0, rank, w
    cdef int32_t slot
    cdef int in_word
    memset(bits, 0, n_words * sizeof(uint64_t))
    for j in range(n):
        slot = slots[j]
        if _eligible(&agents[slot], call):
            bits[slot >> 6] |= (<uint64_t>1) << (slot & 63)
            count += 1
    if count == 0:
        return -1
    rank = _next_random(rng_state) % count
    for word in range(n_words):
        w = bits[word]
        in_word = acd_popcount64(w)
        if rank < <uint64_t>in_word:
            while rank:
                w &= w - 1
                rank -= 1
            return <int>((word << 6) + acd_ctz64(w))
        rank -= in_word
    return -1


cdef int _choose_call(const AgentRec* agent, const CallRec* calls, const int32_t* slots,
                      Py_ssize_t n, double now) noexcept nogil:
    """Largest (priority, weighted wait), then smallest (seq, slot), among eligible calls."""
    cdef Py_ssize_t j
    cdef int32_t slot
    cdef int best = -1
    cdef int64_t best_priority = 0, best_seq = 0
    cdef double wait, best_wait = 0.0
    cdef const CallRec* call
    for j in range(n):
        slot = slots[j]
        call = &calls[slot]
        wait = (now - call.enqueued_at) * call.weight
        if best >= 0:
            if call.priority < best_priority:
                continue
            if call.priority == best_priority:
                if wait < best_wait:
                    continue
                if wait == best_wait:
                    if call.seq > best_seq:
                        continue
                    if call.seq == best_seq and slot > best:
                        continue
        if not _eligible(agent, call):
            continue
        best, best_priority, best_wait, best_seq = slot, call.priority, wait, call.seq
    return best


# ---- dense slot lists -------------------------------------------------------

cdef inline void _dense_add(int32_t* slots, int32_t* pos, Py_ssize_t* n, int32_t slot) noexcept nogil:
    if pos[slot] < 0:
        pos[slot] = <int32_t>n[0]
        slots[n[0]] = slot
        n[0] += 1


cdef inline void _dense_remove(int32_t* slots, int32_t* pos, Py_ssize_t* n, int32_t slot) noexcept nogil:
    cdef int32_t at = pos[slot]
    cdef int32_t last
    if at >= 0:
        n[0] -= 1
        last = slots[n[0]]
        slots[at] = last
        pos[last] = at
        pos[slot] = -1


cdef class Matcher:
    """Skills-based matcher over fixed C tables of agents and waiting calls."""
    cdef readonly Py_ssize_t n_skills
    cdef readonly Py_ssize_t agent_capacity
    cdef readonly Py_ssize_t call_capacity
    cdef readonly Py_ssize_t n_queues
    cdef AgentRec* agents
    cdef CallRec* calls
    cdef int32_t* available_slots     # dense list of available agents, any order
    cdef int32_t* available_pos       # slot -> index in available_slots, -1 when absent
    cdef Py_ssize_t n_available
    cdef int32_t* waiting_slots       # dense list of waiting calls, any order
    cdef int32_t* waiting_pos
    cdef Py_ssize_t n_waiting
    cdef int32_t* rr_cursor           # per queue: last slot round-robin chose, -1 at start
    cdef uint64_t* eligible_bits      # scratch bitmap over agent slots (random strategy)
    cdef uint64_t rng_state

    def __cinit__(self, n_skills, agent_capacity, call_capacity, n_queues, seed=0):
        cdef Py_ssize_t i
        self.n_skills = _int_in(n_skills, 0, C_MAX_SKILLS, "n_skills")
        self.agent_capacity = _int_in(agent_capacity, 0, MAX_CAPACITY, "agent_capacity")
        self.call_capacity = _int_in(call_capacity, 0, MAX_CAPACITY, "call_capacity")
        self.n_queues = _int_in(n_queues, 0, MAX_CAPACITY, "n_queues")
        state = (PyNumber_Index(seed) ^ SEED_MIX) & MASK64
        self.rng_state = state or SEED_MIX
        # calloc(0) may return NULL: every table gets at least one element.
        self.agents = <AgentRec*>calloc(self.agent_capacity or 1, sizeof(AgentRec))
        self.calls = <CallRec*>calloc(self.call_capacity or 1, sizeof(CallRec))
        self.available_slots = <int32_t*>calloc(self.agent_capacity or 1, sizeof(int32_t))
        self.available_pos = <int32_t*>calloc(self.agent_capacity or 1, sizeof(int32_t))
        self.waiting_slots = <int32_t*>calloc(self.call_capacity or 1, sizeof(int32_t))
        self.waiting_pos = <int32_t*>calloc(self.call_capacity or 1, sizeof(int32_t))
        self.rr_cursor = <int32_t*>calloc(self.n_queues or 1, sizeof(int32_t))
        self.eligible_bits = <uint64_t*>calloc((self.agent_capacity + 63) // 64 or 1,
                                               sizeof(uint64_t))
        if (self.agents == NULL or self.calls == NULL or self.available_slots == NULL
                or self.available_pos == NULL or self.waiting_slots == NULL
                or self.waiting_pos == NULL or self.rr_cursor == NULL
                or self.eligible_bits == NULL):
            raise MemoryError("matcher tables")
        for i in range(self.agent_capacity):
            self.available_pos[i] = -1
        for i in range(self.call_capacity):
            self.waiting_pos[i] = -1
        for i in range(self.n_queues):
            self.rr_cursor[i] = -1

    def __dealloc__(self):
        free(self.agents)
        free(self.calls)
        free(self.available_slots)
        free(self.available_pos)
        free(self.waiting_slots)
        free(self.waiting_pos)
        free(self.rr_cursor)
        free(self.eligible_bits)

    # ---- argument checks -------------------------------------------------

    cdef AgentRec* _agent_at(self, object slot) except NULL:
        cdef Py_ssize_t index = _index(slot, self.agent_capacity, "agent slot")
        if not self.agents[index].in_use:
            raise ValueError(f"no agent in slot {index}")
        return &self.agents[index]

    cdef CallRec* _call_at(self, object slot) except NULL:
        cdef Py_ssize_t index = _index(slot, self.call_capacity, "call slot")
        if not self.calls[index].in_use:
            raise ValueError(f"no call in slot {index}")
        return &self.calls[index]

    def _skill(self, value):
        skill = PyNumber_Index(value)
        if not 0 <= skill < self.n_skills:
            raise ValueError(f"skill {skill} out of range 0..{self.n_skills - 1}")
        return skill

    cdef int _parse_sets(self, object requirement_sets, RequirementSet* out) except -1:
        """Check requirement sets and write them to `out`; returns how many."""
        cdef Py_ssize_t skill, n_sets
        cdef RequirementSet* rs
        sets = tuple(requirement_sets)
        n_sets = len(sets)
        if not 1 <= n_sets <= C_MAX_SETS:
            raise ValueError(f"a call needs 1..{C_MAX_SETS} requirement sets, got {n_sets}")
        for k, pairs in enumerate(sets):
            pairs = tuple(pairs)
            if len(pairs) > C_MAX_PAIRS:
                raise ValueError(f"a requirement set holds at most {C_MAX_PAIRS} pairs, "
                                 f"got {len(pairs)}")
            rs = &out[<Py_ssize_t>k]
            memset(rs, 0, sizeof(RequirementSet))
            for skill_value, minimum in pairs:
                skill = self._skill(skill_value)
                rs.minimum[rs.n_pairs] = _int_in(minimum, 0, MAX_PROFICIENCY, "minimum proficiency")
                rs.skill[rs.n_pairs] = skill
                rs.required[skill >> 6] |= (<uint64_t>1) << (skill & 63)
                rs.n_pairs += 1
        return n_sets

    # ---- agents ------------------------------------------------------------

    def set_agent(self, slot, skills):
        """Give the agent in `slot` these (skill, proficiency) pairs.

        A new agent starts unavailable with zero counters; an existing one keeps
        its state and only its skills change.
        """
        cdef Py_ssize_t index = _index(slot, self.agent_capacity, "agent slot")
        cdef Py_ssize_t skill
        cdef uint64_t bits[SKILL_WORDS]
        cdef uint8_t proficiency[C_MAX_SKILLS]
        cdef AgentRec* agent
        memset(bits, 0, sizeof(bits))
        memset(proficiency, 0, sizeof(proficiency))
        for skill_value, level in skills:
            skill = self._skill(skill_value)
            proficiency_level = _int_in(level, 0, MAX_PROFICIENCY, "proficiency")
            if (bits[skill >> 6] >> (skill & 63)) & 1:
                raise ValueError(f"skill {skill} given twice")
            bits[skill >> 6] |= (<uint64_t>1) << (skill & 63)
            proficiency[skill] = proficiency_level
        agent = &self.agents[index]
        if not agent.in_use:
            memset(agent, 0, sizeof(AgentRec))
            agent.in_use = 1
        memcpy(agent.skills, bits, sizeof(bits))
        memcpy(agent.proficiency, proficiency, sizeof(proficiency))

    def remove_agent(self, slot):
        cdef AgentRec* agent = self._agent_at(slot)
        cdef int32_t index = <int32_t>(agent - self.agents)
        _dense_remove(self.available_slots, self.available_pos, &self.n_available, index)
        memset(agent, 0, sizeof(AgentRec))

    def set_agent_available(self, slot, available, idle_since):
        cdef AgentRec* agent = self._agent_at(slot)
        cdef int32_t index = <int32_t>(agent - self.agents)
        agent.idle_since = _finite(idle_since, "idle_since")
        agent.available = bool(available)
        if agent.available:
            _dense_add(self.available_slots, self.available_pos, &self.n_available, index)
        else:
            _dense_remove(self.available_slots, self.available_pos, &self.n_available, index)

    def set_agent_counters(self, slot, calls_handled, occupancy):
        cdef AgentRec* agent = self._agent_at(slot)
        cdef int64_t handled = _int_in(calls_handled, 0, INT64_MAX, "calls_handled")
        cdef double occupied = _finite(occupancy, "occupancy")
        if not 0.0 <= occupied <= 1.0:
            raise ValueError(f"occupancy must be in 0..1, got {occupied}")
        agent.calls_handled = handled
        agent.occupancy = occupied

    # ---- waiting calls -----------------------------------------------------

    def add_call(self, slot, queue, priority, enqueued_at, seq, weight, requirement_sets):
        """Put a waiting call in a free slot (re-adding with the same enqueued_at and
        seq gives the call back its place)."""
        cdef Py_ssize_t index = _index(slot, self.call_capacity, "call slot")
        cdef CallRec staged
        if self.calls[index].in_use:
            raise ValueError(f"call slot {index} is already in use")
        memset(&staged, 0, sizeof(CallRec))
        staged.queue = <int32_t>_index(queue, self.n_queues, "queue")
        staged.priority = _int_in(priority, -2**31, 2**31 - 1, "priority")
        staged.enqueued_at = _finite(enqueued_at, "enqueued_at")
        staged.seq = _int_in(seq, 0, INT64_MAX, "seq")
        staged.weight = _weight(weight)
        staged.n_sets = self._parse_sets(requirement_sets, staged.sets)
        staged.in_use = 1
        memcpy(&self.calls[index], &staged, sizeof(CallRec))
        _dense_add(self.waiting_slots, self.waiting_pos, &self.n_waiting, <int32_t>index)

    def set_call_requirements(self, slot, requirement_sets):
        """Replace the call's requirement sets (overflow: relax a minimum, add a set)."""
        cdef CallRec* call = self._call_at(slot)
        cdef RequirementSet staged[C_MAX_SETS]
        cdef int n_sets = self._parse_sets(requirement_sets, staged)
        memcpy(call.sets, staged, n_sets * sizeof(RequirementSet))
        call.n_sets = n_sets

    def set_call_queue(self, slot, queue, priority, weight):
        """Move the call to another queue; it keeps enqueued_at and seq."""
        cdef CallRec* call = self._call_at(slot)
        cdef int32_t new_queue = <int32_t>_index(queue, self.n_queues, "queue")
        cdef int64_t new_priority = _int_in(priority, -2**31, 2**31 - 1, "priority")
        call.weight = _weight(weight)
        call.queue, call.priority = new_queue, new_priority

    def remove_call(self, slot):
        cdef CallRec* call = self._call_at(slot)
        cdef int32_t index = <int32_t>(call - self.calls)
        _dense_remove(self.waiting_slots, self.waiting_pos, &self.n_waiting, index)
        call.in_use = 0

    # ---- decisions ---------------------------------------------------------

    cpdef int pick_agent(self, object call, object strategy, object now) except -2:
        """The available agent to offer the call to, by `strategy`; -1 if none fits."""
        cdef const CallRec* waiting = self._call_at(call)
        cdef Py_ssize_t code = PyNumber_AsSsize_t(strategy, ValueError)
        cdef int chosen
        if code < S_LONGEST_IDLE or code > S_RANDOM:
            raise ValueError(f"unknown strategy {code}")
        _finite(now, "now")
        with nogil:
            if code == S_ROUND_ROBIN:
                chosen = _choose_round_robin(self.agents, self.available_slots, self.n_available,
                                             waiting, self.rr_cursor[waiting.queue],
                                             self.agent_capacity)
                if chosen >= 0:
                    self.rr_cursor[waiting.queue] = chosen
            elif code == S_RANDOM:
                chosen = _choose_random(self.agents, self.available_slots, self.n_available,
                                        waiting, self.eligible_bits, self.agent_capacity,
                                        &self.rng_state)
            else:
                chosen = _choose_by_key(self.agents, self.available_slots, self.n_available,
                                        waiting, <int>code)
        return chosen

    cpdef int pick_call(self, object agent, object now) except -2:
        """The waiting call this agent should take next; -1 if it fits none."""
        cdef const AgentRec* free_agent = self._agent_at(agent)
        cdef double at = _finite(now, "now")
        cdef int chosen
        with nogil:
            chosen = _choose_call(free_agent, self.calls, self.waiting_slots, self.n_waiting, at)
        return chosen

    def count_eligible_agents(self, call, available_only):
        cdef const CallRec* waiting = self._call_at(call)
        cdef Py_ssize_t i, count = 0
        if available_only:
            with nogil:
                for i in range(self.n_available):
                    count += _eligible(&self.agents[self.available_slots[i]], waiting)
        else:
            with nogil:
                for i in range(self.agent_capacity):
                    if self.agents[i].in_use:
                        count += _eligible(&self.agents[i], waiting)
        return count

    @property
    def waiting_calls(self):
        return self.n_waiting

    @property
    def available_agents(self):
        return self.n_available
