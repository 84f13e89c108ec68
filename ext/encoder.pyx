# The compiled event encoder (router.store.cencoder): `encode_event(event, run)` gives the
# same bytes as router.store.writer's pure-Python `encode_event` (its twin and reference),
# one tuple of PostgreSQL's binary COPY format, at a fraction of the cost.  It encodes the
# common case itself: an exact-float `ts`, exact-str texts, `data` a plain dict whose keys
# are printable-ASCII strings and whose values are None, bools, ints of 64 bits, finite
# floats or printable-ASCII strings (no quote or backslash: nothing to escape).  Anything
# else (nested values, non-ASCII text, a value to escape or refuse, a bad id or ts) goes to
# the twin, which encodes it or raises InvalidEvent: one implementation of every check.
# Text fields come from the twin's cache of encoded fields (`configure`); on a miss an ASCII
# text without NUL (a new call id, say) is encoded and cached here as the twin's `_field`
# would, anything else by the twin's `_field` itself, so both agree on the cache too.
# Three shortcuts keep its cost per event low (callgrind, the simulator's events): the event's
# fields are read through the getters (or slot offsets) of its class's descriptors, found once
# (`configure_event_type`), not a generic attribute lookup each; a text field seen again as the
# same str object comes from a small table keyed by identity before the dict; numbers are
# written by hand, not by snprintf; the id's 128 bits are written by one call.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem, PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_CheckExact
from libc.math cimport isfinite, modf, nearbyint
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memchr, memcpy, strlen

from types import GetSetDescriptorType, MemberDescriptorType

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    int T_OBJECT_EX

cdef extern from "Python.h":
    ctypedef PyObject *(*getter)(PyObject *, void *)
    ctypedef struct PyGetSetDef:
        getter get
        void *closure
    ctypedef struct PyGetSetDescrObject:
        PyGetSetDef *d_getset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    ctypedef struct PyTypeObject
    PyTypeObject *Py_TYPE(object)
    ctypedef struct PyLongObject
    int _PyLong_AsByteArray(PyLongObject *, unsigned char *, size_t, int, int)
    void PyErr_Clear()
    void Py_INCREF(PyObject *)
    void Py_XDECREF(PyObject *)
    bint PyUnicode_IS_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void *PyUnicode_DATA(object)
    char *PyOS_double_to_string(double, char, int, int, int *) except NULL
    int Py_DTSF_ADD_DOT_0


cdef dict _fields = None            # the twin's cache: text -> encoded field
cdef object _field = None           # the twin's `_field(name, value)` (checks, caches)
cdef object _fallback = None        # the twin's `encode_event`
cdef Py_ssize_t _fields_max = 0     # the twin's _FIELDS_MAX: the cache is cleared when it has as many
cdef double _ts_min = 0.0, _ts_max = 0.0
cdef int64_t _pg_epoch_us = 946684800LL * 1000000LL

cdef char *_buf = NULL              # the JSON text being built (reused, grows)
cdef Py_ssize_t _cap = 0

# The event class whose fields are read directly, and how: per field (EVENT_FIELDS' order) its
# descriptor's getter (a compiled class) or its slot's offset (a class with __slots__).
EVENT_FIELDS = ("serial", "ts", "type", "data", "call_id", "queue", "agent")
ctypedef struct _Reader:
    getter get
    void *closure
    Py_ssize_t offset
cdef PyTypeObject *_event_type = NULL
cdef object _event_class = None     # holds the class alive while _event_type points at it
cdef _Reader _readers[7]

# Text fields by identity: a str seen again as the same object (the run, the types, queues and
# agents the engine passes around, a call's id through its events) skips the dict.  Each entry
# holds a reference to its text and to its field, so an address is never reused while cached.
cdef enum:
    _IDENTITY_SLOTS = 512
cdef PyObject *_identity_texts[_IDENTITY_SLOTS]
cdef PyObject *_identity_fields[_IDENTITY_SLOTS]


def configure(dict fields, Py_ssize_t fields_max, field, fallback, double ts_min, double ts_max):
    """Share the twin's field cache and its bound, field encoder and encoder (router.store.writer
    does this)."""
    global _fields, _fields_max, _field, _fallback, _ts_min, _ts_max
    _fields, _fields_max, _field, _fallback, _ts_min, _ts_max = fields, fields_max, field, fallback, ts_min, ts_max
    _forget_identities()


def configure_event_type(cls):
    """Read the fields of `cls`'s instances through its descriptors (router.store.writer passes
    router.events.Event, compiled or not); whether it does.  A class whose fields are not all
    plain getters or object slots is read by generic attribute lookups, as any other class is."""
    global _event_type, _event_class
    cdef object descriptor
    cdef _Reader readers[7]
    cdef int i
    _event_type, _event_class = NULL, None
    for i, name in enumerate(EVENT_FIELDS):
        descriptor = cls.__dict__.get(name)
        if type(descriptor) is GetSetDescriptorType:
            readers[i].get = (<PyGetSetDescrObject *>descriptor).d_getset.get
            readers[i].closure = (<PyGetSetDescrObject *>descriptor).d_getset.closure
            readers[i].offset = 0
        elif type(descriptor) is MemberDescriptorType \
                and (<PyMemberDescrObject *>descriptor).d_member.type == T_OBJECT_EX:
            readers[i].get = NULL
            readers[i].closure = NULL
            readers[i].offset = (<PyMemberDescrObject *>descriptor).d_member.offset
        else:
            return False
    for i in range(7):
        _readers[i] = readers[i]
    _event_class = cls
    _event_type = <PyTypeObject *>cls
    return True


cdef void _forget_identities():
    cdef int i
    for i in range(_IDENTITY_SLOTS):
        Py_XDECREF(_identity_texts[i])
        Py_XDECREF(_identity_fields[i])
        _identity_texts[i] = NULL
        _identity_fields[i] = NULL


cdef inline object _read(object event, int i):
    """Field i of an event of the configured class (None: unset, for the generic lookup to raise)."""
    cdef PyObject *value
    if _readers[i].get != NULL:
        value = _readers[i].get(<PyObject *>event, _readers[i].closure)
        if value == NULL:
            PyErr_Clear()
            return None
        result = <object>value
        Py_XDECREF(value)               # the getter's new reference; `result` holds its own
        return result
    value = (<PyObject **>((<char *><PyObject *>event) + _readers[i].offset))[0]
    return <object>value if value != NULL else None


cdef int _reserve(Py_ssize_t need) except -1:
    global _buf, _cap
    cdef Py_ssize_t cap
    cdef char *grown
    if need <= _cap:
        return 0
    cap = max(need, 2 * _cap, 1024)
    grown = <char *>PyMem_Realloc(_buf, cap)
    if grown == NULL:
        raise MemoryError()
    _buf, _cap = grown, cap
    return 0


cdef inline bint _plain_ascii(object text):
    """An exact str of printable ASCII without '"' or '\\': JSON takes it as it is."""
    cdef const uint8_t *chars
    cdef Py_ssize_t i, n
    cdef uint8_t c
    if not PyUnicode_CheckExact(text) or not PyUnicode_IS_ASCII(text):
        return False
    chars = <const uint8_t *>PyUnicode_DATA(text)
    n = PyUnicode_GET_LENGTH(text)
    for i in range(n):
        c = chars[i]
        if c < 0x20 or c == 0x22 or c == 0x5c:
            return False
    return True


cdef inline Py_ssize_t _put_text(Py_ssize_t at, object text) except -1:
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    _reserve(at + n + 2)
    _buf[at] = b'"'
    memcpy(_buf + at + 1, PyUnicode_DATA(text), n)
    _buf[at + n + 1] = b'"'
    return at + n + 2


cdef inline Py_ssize_t _put_raw(Py_ssize_t at, const char *raw, Py_ssize_t n) except -1:
    _reserve(at + n)
    memcpy(_buf + at, raw, n)
    return at + n


cdef inline int _digits(char *out, unsigned long long value):
    """The decimal digits of `value` at `out`; how many."""
    cdef char reversed_[24]
    cdef int n = 0, i
    while True:
        reversed_[n] = <char>(48 + value % 10)
        n += 1
        value //= 10
        if value == 0:
            break
    for i in range(n):
        out[i] = reversed_[n - 1 - i]
    return n


cdef inline int _integer(char *out, long long value):
    """`value` in decimal at `out` (as "%lld"); how many characters."""
    if value < 0:
        out[0] = b'-'
        return 1 + _digits(out + 1, <unsigned long long>0 - <unsigned long long>value)
    return _digits(out, <unsigned long long>value)


cdef Py_ssize_t _put_float(Py_ssize_t at, double real) except -1:
    """float.__repr__ of a finite `real`.  A whole number of milliseconds under 1e12 in size (what
    the engine's round_ms gives: most of an event's floats) is written here: its decimal k/1000
    has at most 15 significant digits, so no shorter decimal reads back as the same double, and
    that decimal is the repr (fixed notation from 0.001 up, '.0' when whole).  Any other float,
    and zero (its sign), by Python's repr."""
    cdef double scaled
    cdef long long k, whole, fraction
    cdef char digits[32]
    cdef int n = 0, i
    cdef char *text
    if real != 0.0 and -1e12 < real < 1e12:
        scaled = nearbyint(real * 1000.0)
        if scaled / 1000.0 == real:
            k = <long long>scaled
            if k < 0:
                digits[n] = b'-'
                n += 1
                k = -k
            whole, fraction = k // 1000, k % 1000
            n += _digits(digits + n, <unsigned long long>whole)
            digits[n] = b'.'
            n += 1
            if fraction == 0:
                digits[n] = b'0'
                n += 1
            else:
                for i in range(3):                       # three decimals, trailing zeros dropped
                    digits[n] = <char>(48 + fraction // 100)
                    n += 1
                    fraction = (fraction % 100) * 10
                    if fraction == 0:
                        break
            return _put_raw(at, digits, n)
    text = PyOS_double_to_string(real, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        return _put_raw(at, text, <Py_ssize_t>strlen(text))
    finally:
        PyMem_Free(text)


cdef Py_ssize_t _json(object data) except -2:
    """`data` as compact JSON in _buf, its length; -1: not a case for this encoder."""
    cdef Py_ssize_t pos = 0, at = 1
    cdef PyObject *key
    cdef PyObject *value
    cdef object v
    cdef int overflow
    cdef long long number
    cdef double real
    cdef char digits[32]
    cdef char *text
    cdef bint first = True
    _reserve(2)
    _buf[0] = b'{'
    while PyDict_Next(data, &pos, &key, &value):
        if not _plain_ascii(<object>key):
            return -1
        if not first:
            at = _put_raw(at, b",", 1)
        first = False
        at = _put_text(at, <object>key)
        at = _put_raw(at, b":", 1)
        v = <object>value
        if v is None:
            at = _put_raw(at, b"null", 4)
        elif v is True:
            at = _put_raw(at, b"true", 4)
        elif v is False:
            at = _put_raw(at, b"false", 5)
        elif PyFloat_CheckExact(v):
            real = PyFloat_AS_DOUBLE(v)
            if not isfinite(real):
                return -1
            at = _put_float(at, real)
        elif PyLong_CheckExact(v):
            number = PyLong_AsLongLongAndOverflow(v, &overflow)
            if overflow:
                return -1
            at = _put_raw(at, digits, _integer(digits, number))
        elif _plain_ascii(v):
            at = _put_text(at, v)
        else:
            return -1
    return _put_raw(at, b"}", 1)


cdef inline void _be32(char *out, int value):
    cdef uint64_t u = <unsigned int>value
    out[0] = <char>(u >> 24); out[1] = <char>(u >> 16); out[2] = <char>(u >> 8); out[3] = <char>u


cdef inline void _be64(char *out, uint64_t u):
    cdef int i
    for i in range(8):
        out[i] = <char>(u >> (56 - 8 * i))


cdef inline object _text_field(object value):
    """The encoded field of an exact, cached str; None: the twin decides."""
    cdef PyObject *hit
    cdef size_t slot = (<size_t><PyObject *>value >> 4) % _IDENTITY_SLOTS
    if _identity_texts[slot] == <PyObject *>value:
        return <object>_identity_fields[slot]
    if not PyUnicode_CheckExact(value):
        return None
    hit = PyDict_GetItem(_fields, value)
    if hit == NULL:
        return None
    _remember(slot, <PyObject *>value, hit)
    return <object>hit


cdef inline void _remember(size_t slot, PyObject *text, PyObject *field):
    Py_INCREF(text)
    Py_INCREF(field)
    Py_XDECREF(_identity_texts[slot])
    Py_XDECREF(_identity_fields[slot])
    _identity_texts[slot] = text
    _identity_fields[slot] = field


cdef object _new_field(str name, object value):
    """The field of a text the cache lacks: an exact ASCII str without NUL encoded and cached here,
    as the twin's `_field` does it (its checks pass for it); anything else by `_field` itself."""
    cdef Py_ssize_t n
    cdef const char *text
    cdef bytes field
    if PyUnicode_CheckExact(value) and PyUnicode_IS_ASCII(value):
        n = PyUnicode_GET_LENGTH(value)
        text = <const char *>PyUnicode_DATA(value)
        if n <= 0x7fffffff and memchr(text, 0, n) == NULL:
            field = PyBytes_FromStringAndSize(NULL, n + 4)
            _be32(PyBytes_AS_STRING(field), <int>n)
            memcpy(PyBytes_AS_STRING(field) + 4, text, n)
            if len(_fields) >= _fields_max:
                _fields.clear()
            _fields[value] = field
            return field
    return _field(name, value)


_NULL_FIELD = b"\xff\xff\xff\xff"


cdef inline Py_ssize_t _copy_field(char *p, Py_ssize_t at, bytes field):
    memcpy(p + at, PyBytes_AS_STRING(field), PyBytes_GET_SIZE(field))
    return at + PyBytes_GET_SIZE(field)


def encode_event(event, str run):
    """router.store.writer.encode_event, compiled: the same bytes, the same errors."""
    return _encode(event, run)


def encode_events(events, str run):
    """encode_event of each of `events`, in order, as a list (one call for a simulator's slice)."""
    return [_encode(event, run) for event in events]


cdef object _encode(object event, str run):
    cdef object serial, ts, type_, data, call_id, queue, agent
    cdef object f_run, f_call, f_type, f_queue, f_agent
    cdef double seconds, whole, fraction
    cdef int64_t micros
    cdef Py_ssize_t json_len, total, at
    cdef unsigned char id_bytes[16]
    cdef bytes out
    cdef char *p
    if Py_TYPE(event) == _event_type:
        serial, ts, type_, data = _read(event, 0), _read(event, 1), _read(event, 2), _read(event, 3)
        call_id, queue, agent = _read(event, 4), _read(event, 5), _read(event, 6)
    else:
        serial, ts, type_, data = event.serial, event.ts, event.type, event.data
        call_id, queue, agent = event.call_id, event.queue, event.agent
    if not PyLong_CheckExact(serial) or not PyFloat_CheckExact(ts) \
            or not PyDict_CheckExact(data) or not PyUnicode_CheckExact(type_) or not type_:
        return _fallback(event, run)
    if _PyLong_AsByteArray(<PyLongObject *>serial, id_bytes, 16, 0, 0) < 0:     # negative or past 128 bits
        PyErr_Clear()
        return _fallback(event, run)
    seconds = PyFloat_AS_DOUBLE(ts)
    if not (isfinite(seconds) and _ts_min <= seconds < _ts_max):
        return _fallback(event, run)
    # the data first, then the text fields in the twin's order (run, call_id, type, queue, agent):
    # an event with several faults gets the twin's error, the first one it checks
    json_len = _json(data)
    if json_len < 0:
        return _fallback(event, run)
    f_run = _text_field(run)
    f_call = _NULL_FIELD if call_id is None else _text_field(call_id)
    f_type = _text_field(type_)
    f_queue = _NULL_FIELD if queue is None else _text_field(queue)
    f_agent = _NULL_FIELD if agent is None else _text_field(agent)
    if f_run is None or f_type is None or f_call is None or f_queue is None or f_agent is None:
        if not ((call_id is None or PyUnicode_CheckExact(call_id)) and (queue is None or PyUnicode_CheckExact(queue))
                and (agent is None or PyUnicode_CheckExact(agent))):
            return _fallback(event, run)
        # a text not seen yet: checked, encoded and cached, in the twin's order
        f_run = _new_field("run", run) if f_run is None else f_run
        f_call = _new_field("call_id", call_id) if f_call is None else f_call
        f_type = _new_field("type", type_) if f_type is None else f_type
        f_queue = _new_field("queue", queue) if f_queue is None else f_queue
        f_agent = _new_field("agent", agent) if f_agent is None else f_agent
    fraction = modf(seconds, &whole)
    micros = <int64_t>whole * 1000000 + <int64_t>nearbyint(fraction * 1e6) - _pg_epoch_us
    total = (2 + 20 + 12 + PyBytes_GET_SIZE(f_run) + PyBytes_GET_SIZE(f_call) + PyBytes_GET_SIZE(f_type)
             + PyBytes_GET_SIZE(f_queue) + PyBytes_GET_SIZE(f_agent) + 5 + json_len)
    out = PyBytes_FromStringAndSize(NULL, total)
    p = PyBytes_AS_STRING(out)
    p[0] = 0; p[1] = 8
    _be32(p + 2, 16)
    memcpy(p + 6, id_bytes, 16)
    _be32(p + 22, 8)
    _be64(p + 26, <uint64_t>micros)
    at = _copy_field(p, 34, f_run)
    at = _copy_field(p, at, f_call)
    at = _copy_field(p, at, f_type)
    at = _copy_field(p, at, f_queue)
    at = _copy_field(p, at, f_agent)
    _be32(p + at, <int>(json_len + 1))
    p[at + 4] = 1
    memcpy(p + at + 5, _buf, json_len)
    return out
