# C data of the compiled matcher (ext/matcher.pyx); see that file for the theory.
#
# The extension is built as router.engine.cmatcher, so Cython does not pair this
# file with ext/matcher.pyx by name: the .pyx cimports these declarations
# (`from matcher cimport ...`, found through setup.py's include_path=["ext"])
# and declares its cdef class itself.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t


cdef enum:
    SKILL_WORDS = 4          # 4 x 64 bits = 256 skills
    C_MAX_SKILLS = 256
    C_MAX_PAIRS = 16
    C_MAX_SETS = 8


ctypedef struct AgentRec:
    uint64_t skills[SKILL_WORDS]          # bit s set: the agent has skill s
    uint8_t proficiency[C_MAX_SKILLS]     # meaningful where the skill bit is set
    double idle_since
    double occupancy
    int64_t calls_handled
    uint8_t in_use
    uint8_t available


ctypedef struct RequirementSet:
    uint64_t required[SKILL_WORDS]        # skills named by the pairs: fast reject
    uint8_t skill[C_MAX_PAIRS]
    uint8_t minimum[C_MAX_PAIRS]
    int32_t n_pairs


ctypedef struct CallRec:
    double enqueued_at
    double weight
    int64_t seq
    int64_t priority
    int32_t queue
    int32_t n_sets
    uint8_t in_use
    RequirementSet sets[C_MAX_SETS]
