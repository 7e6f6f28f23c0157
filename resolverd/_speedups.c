/* resolverd._speedups: the client's lookups compiled, on the C reader include/resolverd.h.
 *
 * Optional: setup.py builds it where a C compiler is present and the client falls back to its
 * pure-Python lookups (resolverd/_hot.py) where it is not, or when RESOLVERD_PURE_PYTHON=1.
 * Both give the same answers and raise the same errors (tests/unit/test_speedups.py runs the
 * client's lookup tests on each). The snapshot was validated by the Python reader before a
 * `Lookups` is made over it; resolverd.h validates it again, and bound-checks what it reads,
 * so a damaged payload gives wrong answers at worst, never a read outside the mapping.
 *
 * A `Lookups` holds buffer exports on the snapshot's memory (and on a follower's control
 * words), so the mapping cannot be unmapped under it: `release()` drops them (Resolver.close
 * calls it) and the lookups then raise ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "resolverd.h"

typedef struct {
    PyObject_HEAD
    Py_buffer memory;      /* the whole snapshot; .buf is NULL once released */
    Py_buffer control;     /* a follower's control words; .buf is NULL when not following */
    rsv_snapshot snap;
    unsigned long long sequence; /* the control sequence this generation was read under */
    PyObject *brokers;     /* name -> index into snap.brokers */
    PyObject *feeds;       /* name -> index into snap.feeds */
    PyObject *unknown;     /* unknown(what, name, names) -> the exception to raise */
    PyObject *follow;      /* follow() -> the resolver to ask after a swap */
} Lookups;

static PyObject *closed_error(void) {
    PyErr_SetString(PyExc_ValueError, "the resolver is closed");
    return NULL;
}

static void drop(Lookups *self) {
    if (self->memory.buf != NULL) PyBuffer_Release(&self->memory);
    if (self->control.buf != NULL) PyBuffer_Release(&self->control);
    self->memory.buf = self->control.buf = NULL;
    free(self->snap.brokers);
    free(self->snap.feeds);
    self->snap.brokers = NULL;
    self->snap.feeds = NULL;
    self->snap.broker_count = self->snap.feed_count = 0;
}

static PyObject *names_of(uint32_t count, const char *first, size_t stride) {
    PyObject *names = PyDict_New();
    for (uint32_t i = 0; names != NULL && i < count; i++) {
        PyObject *index = PyLong_FromUnsignedLong(i);
        if (index == NULL || PyDict_SetItemString(names, first + (size_t)i * stride, index) < 0)
            Py_CLEAR(names);
        Py_XDECREF(index);
    }
    return names;
}

static int Lookups_init(Lookups *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"memory", "strict", "unknown", "control", "sequence", "follow",
                               NULL};
    PyObject *memory, *unknown, *control = Py_None, *follow = Py_None;
    int strict;
    unsigned long long sequence = 0;
    if (self->memory.buf != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Lookups is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OpO|$OKO", keywords, &memory, &strict,
                                     &unknown, &control, &sequence, &follow))
        return -1;
    if (PyObject_GetBuffer(memory, &self->memory, PyBUF_SIMPLE) < 0) return -1;
    self->snap.base = (const unsigned char *)self->memory.buf;
    self->snap.size = (size_t)self->memory.len;
    self->snap.flags = strict ? RSV_STRICT : 0;
    char err[RSV_ERROR_SIZE];
    if (((uintptr_t)self->memory.buf % 8) != 0 || rsv__view(&self->snap, err, sizeof err) != RSV_OK) {
        if ((uintptr_t)self->memory.buf % 8) snprintf(err, sizeof err, "misaligned buffer");
        drop(self);
        PyErr_Format(PyExc_ValueError, "resolverd.h refuses the snapshot: %s", err);
        return -1;
    }
    if (control != Py_None) {
        if (PyObject_GetBuffer(control, &self->control, PyBUF_SIMPLE) < 0) {
            drop(self);
            return -1;
        }
        if (self->control.len < (Py_ssize_t)RSV_CONTROL_SIZE ||
            ((uintptr_t)self->control.buf % 8) != 0) {
            drop(self);
            PyErr_SetString(PyExc_ValueError, "control: not a mapped control segment");
            return -1;
        }
    }
    self->brokers = names_of(self->snap.broker_count,
                             self->snap.broker_count ? self->snap.brokers[0].name : NULL,
                             sizeof(rsv_broker));
    self->feeds = names_of(self->snap.feed_count,
                           self->snap.feed_count ? self->snap.feeds[0].name : NULL,
                           sizeof(rsv_feed));
    if (self->brokers == NULL || self->feeds == NULL) {
        drop(self);
        return -1;
    }
    self->sequence = sequence;
    Py_INCREF(unknown);
    self->unknown = unknown;
    Py_INCREF(follow);
    self->follow = follow;
    return 0;
}

static int Lookups_traverse(Lookups *self, visitproc visit, void *arg) {
    Py_VISIT(self->unknown);
    Py_VISIT(self->follow);
    return 0;
}

static int Lookups_clear(Lookups *self) {
    Py_CLEAR(self->unknown);
    Py_CLEAR(self->follow);
    return 0;
}

static void Lookups_dealloc(Lookups *self) {
    PyObject_GC_UnTrack(self);
    drop(self);
    Py_CLEAR(self->brokers);
    Py_CLEAR(self->feeds);
    Lookups_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* -- helpers --------------------------------------------------------------------------------- */

/* Whether a following resolver's generation was replaced: one acquire load of the sequence. */
static inline int stale(const Lookups *self) {
    if (self->control.buf == NULL) return 0;
    const uint64_t *words = (const uint64_t *)self->control.buf;
    return __atomic_load_n(&words[RSV_CONTROL_SEQUENCE_OFFSET / 8], __ATOMIC_ACQUIRE) !=
           self->sequence;
}

/* The lookup `name` asked of the generation follow() switches to. */
static PyObject *followed(Lookups *self, const char *name, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *current = PyObject_CallNoArgs(self->follow);
    if (current == NULL) return NULL;
    PyObject *method = PyObject_GetAttrString(current, name);
    Py_DECREF(current);
    if (method == NULL) return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, (size_t)nargs, kwnames);
    Py_DECREF(method);
    return result;
}

/* The index of a broker or feed name, or -1 with the caller's UnknownNameError set. */
static Py_ssize_t index_of(Lookups *self, PyObject *table, const char *what, PyObject *name) {
    PyObject *index = PyDict_GetItemWithError(table, name);
    if (index != NULL) return PyLong_AsSsize_t(index);
    if (PyErr_Occurred()) return -1;
    PyObject *error = PyObject_CallFunction(self->unknown, "sOO", what, name, table);
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return -1;
}

static PyObject *miss(PyObject *asked, PyObject *fallback) {
    if (fallback != NULL) return Py_NewRef(fallback);
    PyErr_SetObject(PyExc_KeyError, asked);
    return NULL;
}

/* The arguments of a lookup: two positional, and a third (`default`, by position or name)
 * where `most` is 3. */
static int arguments(const char *name, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, Py_ssize_t most, PyObject **fallback) {
    Py_ssize_t given = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (nargs < 2 || given > most) {
        PyErr_Format(PyExc_TypeError, "%s() takes 2%s arguments (%zd given)", name,
                     most == 3 ? " or 3" : "", given);
        return -1;
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "default") != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument", name);
            return -1;
        }
        *fallback = args[nargs];
        return 0;
    }
    *fallback = most == 2 ? NULL : nargs == 3 ? args[2] : Py_None;
    return 0;
}

/* -- single lookups -------------------------------------------------------------------------- */

/* token(key, broker) and get_token(key, broker, default=None); `fallback` NULL: raise. */
static PyObject *token_of(Lookups *self, PyObject *key, PyObject *broker, PyObject *fallback) {
    if (self->memory.buf == NULL) return closed_error();
    Py_ssize_t j = index_of(self, self->brokers, "broker", broker);
    if (j < 0) return NULL;
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "a key is a str, not %.100s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_AsUTF8AndSize(key, &len);
    if (text == NULL) return NULL;
    if (self->snap.brokers[j].kind == RSV_KIND_INT) {
        uint64_t token;
        if (rsv_token(&self->snap, text, (size_t)len, (int)j, &token) != RSV_OK)
            return miss(key, fallback);
        return PyLong_FromUnsignedLongLong(token);
    }
    const char *token;
    size_t token_len;
    if (rsv_token_str(&self->snap, text, (size_t)len, (int)j, &token, &token_len) != RSV_OK)
        return miss(key, fallback);
    return PyUnicode_DecodeUTF8(token, (Py_ssize_t)token_len, "strict");
}

/* key(token, feed) and get_key(token, feed, default=None): an int feed takes int(token), a
 * string feed str(token), as the pure-Python lookups do. */
static PyObject *key_of(Lookups *self, PyObject *token, PyObject *feed, PyObject *fallback) {
    if (self->memory.buf == NULL) return closed_error();
    Py_ssize_t f = index_of(self, self->feeds, "feed", feed);
    if (f < 0) return NULL;
    const char *key;
    size_t key_len;
    int status;
    if (self->snap.feeds[f].kind == RSV_KIND_INT) {
        PyObject *number = PyLong_CheckExact(token) ? Py_NewRef(token) : PyNumber_Long(token);
        if (number == NULL) return NULL;
        uint64_t value = PyLong_AsUnsignedLongLong(number);
        Py_DECREF(number);
        if (value == (uint64_t)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
            PyErr_Clear();
            return miss(token, fallback); /* negative, or past 2**64: no feed has it */
        }
        status = rsv_key(&self->snap, (int)f, value, &key, &key_len);
    } else {
        PyObject *text = PyObject_Str(token);
        if (text == NULL) return NULL;
        Py_ssize_t len;
        const char *raw = PyUnicode_AsUTF8AndSize(text, &len);
        if (raw == NULL) {
            Py_DECREF(text);
            return NULL;
        }
        status = rsv_key_str(&self->snap, (int)f, raw, (size_t)len, &key, &key_len);
        Py_DECREF(text);
    }
    if (status != RSV_OK) return miss(token, fallback);
    return PyUnicode_DecodeUTF8(key, (Py_ssize_t)key_len, "strict");
}

#define LOOKUP(name, getter, most)                                                          \
    static PyObject *Lookups_##name(Lookups *self, PyObject *const *args, size_t nargsf,     \
                                    PyObject *kwnames) {                                      \
        Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);                                        \
        PyObject *fallback;                                                                   \
        if (arguments(#name, args, nargs, kwnames, most, &fallback) < 0) return NULL;         \
        if (stale(self)) return followed(self, #name, args, nargs, kwnames);                  \
        return getter(self, args[0], args[1], fallback);                                      \
    }

LOOKUP(token, token_of, 2)
LOOKUP(get_token, token_of, 3)
LOOKUP(key, key_of, 2)
LOOKUP(get_key, key_of, 3)
/* -- batches --------------------------------------------------------------------------------- */

/* The batch loop, in blocks so that the CPU has a block's cache misses in flight at once
 * rather than one token's chain of them (bucket pilot, then slot, then target, then key row):
 * each pass over a block prefetches what the next pass reads. */
#define BLOCK 64

static void feed_ordinals(const rsv_feed *feed, uint64_t n, const uint64_t *tokens,
                          int64_t *ordinals, Py_ssize_t count, const char *keys, size_t width,
                          char *rows) {
    uint64_t hashes[BLOCK], slots[BLOCK];
    for (Py_ssize_t first = 0; first < count; first += BLOCK) {
        Py_ssize_t size = count - first < BLOCK ? count - first : BLOCK;
        const uint64_t *t = tokens + first;
        for (Py_ssize_t i = 0; i < size; i++) {
            hashes[i] = rsv__mix(t[i] ^ feed->seed);
            __builtin_prefetch(&feed->pilots[hashes[i] >> feed->shift]);
        }
        for (Py_ssize_t i = 0; i < size; i++) {
            uint64_t h = hashes[i];
            uint64_t s = (h ^ rsv__pilot_mix(feed->pilots[h >> feed->shift])) % feed->slot_count;
            slots[i] = s;
            if (s < feed->count) {
                __builtin_prefetch(&feed->tokens[s]);
                __builtin_prefetch(&feed->targets[s]);
            } else {
                __builtin_prefetch(&feed->remap[s - feed->count]);
            }
        }
        for (Py_ssize_t i = 0; i < size; i++) {
            uint64_t s = slots[i];
            if (s >= feed->count) {
                s = feed->remap[s - feed->count];
                slots[i] = s;
                if (s < feed->count) {
                    __builtin_prefetch(&feed->tokens[s]);
                    __builtin_prefetch(&feed->targets[s]);
                }
            }
        }
        int64_t *found = ordinals + first;
        for (Py_ssize_t i = 0; i < size; i++) {
            uint64_t s = slots[i];
            int64_t o = -1;
            if (s < feed->count && feed->tokens[s] == t[i] && feed->targets[s] < n) {
                o = (int64_t)feed->targets[s];
            }
            found[i] = o;
        }
    }
    if (rows == NULL) return;
    /* The key rows in a pass of their own, each prefetched a block ahead. */
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i + BLOCK < count && ordinals[i + BLOCK] >= 0)
            __builtin_prefetch(keys + (size_t)ordinals[i + BLOCK] * width);
        char *row = rows + (size_t)i * width;
        if (ordinals[i] >= 0)
            memcpy(row, keys + (size_t)ordinals[i] * width, width);
        else
            memset(row, 0, width);
    }
}

/* feed_ordinals_into(tokens, feed, ordinals, rows=None): an int feed's uint64 tokens (a
 * C-contiguous buffer) to int64 ordinals, -1 for a miss; with `rows`, also each token's key
 * row (key_width bytes, NUL for a miss). */
static PyObject *Lookups_feed_ordinals_into(Lookups *self, PyObject *const *args,
                                            Py_ssize_t nargs) {
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "feed_ordinals_into() takes 3 or 4 arguments");
        return NULL;
    }
    if (self->memory.buf == NULL) return closed_error();
    Py_ssize_t f = index_of(self, self->feeds, "feed", args[1]);
    if (f < 0) return NULL;
    const rsv_feed *feed = &self->snap.feeds[f];
    if (feed->kind != RSV_KIND_INT) {
        PyErr_SetString(PyExc_TypeError, "feed_ordinals_into: not an integer feed");
        return NULL;
    }
    const size_t width = self->snap.key_width;
    Py_buffer in, out, rows = {0};
    if (PyObject_GetBuffer(args[0], &in, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(args[2], &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    int with_rows = nargs == 4 && args[3] != Py_None;
    if (with_rows && PyObject_GetBuffer(args[3], &rows, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&in);
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t count = in.len / 8;
    if (in.len % 8 || out.len != count * 8 ||
        (with_rows && (size_t)rows.len != (size_t)count * width)) {
        PyErr_SetString(PyExc_ValueError, "feed_ordinals_into: 8-byte tokens, as many 8-byte "
                                          "ordinals and key_width rows out");
    } else {
        /* The loop runs without the GIL, so another thread may close the resolver meanwhile:
         * a buffer export of our own keeps the mapping, and copies of the tables' pointers
         * outlive `release()` freeing the originals. */
        Py_buffer hold;
        if (PyObject_GetBuffer(self->memory.obj, &hold, PyBUF_SIMPLE) == 0) {
            const rsv_feed table = *feed;
            const uint64_t *tokens = (const uint64_t *)in.buf;
            int64_t *ordinals = (int64_t *)out.buf;
            char *row_buf = with_rows ? (char *)rows.buf : NULL;
            const char *keys = self->snap.keys;
            uint64_t n = self->snap.n;
            Py_BEGIN_ALLOW_THREADS
            feed_ordinals(&table, n, tokens, ordinals, count, keys, width, row_buf);
            Py_END_ALLOW_THREADS
            PyBuffer_Release(&hold);
        }
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    if (with_rows) PyBuffer_Release(&rows);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* ordinals_into(keys, ordinals): a list or tuple of str keys to int64
 * ordinals, -1 for an unknown key; strict mode compares the stored key bytes too. Hashed and
 * placed a block at a time, the fingerprints prefetched before they are compared. */
static PyObject *Lookups_ordinals_into(Lookups *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ordinals_into() takes 2 arguments");
        return NULL;
    }
    if (self->memory.buf == NULL) return closed_error();
    if (!PyList_CheckExact(args[0]) && !PyTuple_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "ordinals_into: keys must be a list or a tuple");
        return NULL;
    }
    Py_buffer out;
    if (PyObject_GetBuffer(args[1], &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) return NULL;
    PyObject *keys = args[0];
    Py_ssize_t count = PySequence_Fast_GET_SIZE(keys);
    if (out.len != count * 8) {
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "ordinals_into: one 8-byte ordinal out per key");
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(keys);
    int64_t *ordinals = (int64_t *)out.buf;
    const rsv_snapshot *snap = &self->snap;
    uint64_t hashes[BLOCK], slots[BLOCK];
    const char *texts[BLOCK];
    Py_ssize_t lengths[BLOCK];
    for (Py_ssize_t first = 0; first < count; first += BLOCK) {
        Py_ssize_t size = count - first < BLOCK ? count - first : BLOCK;
        for (Py_ssize_t i = 0; i < size; i++) {
            PyObject *key = items[first + i];
            const char *text;
            Py_ssize_t len = 0;
            if (PyUnicode_Check(key)) {
                text = PyUnicode_AsUTF8AndSize(key, &len);
            } else {
                PyErr_Format(PyExc_TypeError, "a key is a str, not %.100s", Py_TYPE(key)->tp_name);
                text = NULL;
            }
            if (text == NULL) {
                PyBuffer_Release(&out);
                return NULL;
            }
            texts[i] = text;
            lengths[i] = len;
            uint64_t s = rsv__key_slot(snap, text, (size_t)len, &hashes[i]);
            slots[i] = s;
            if (s < snap->n) __builtin_prefetch(&snap->fingerprints[s]);
        }
        for (Py_ssize_t i = 0; i < size; i++) {
            uint64_t s = slots[i];
            int64_t found = (s < snap->n && snap->fingerprints[s] == hashes[i]) ? (int64_t)s : -1;
            if (found >= 0 && (snap->flags & RSV_STRICT) &&
                !rsv__stores_key(snap, s, texts[i], (size_t)lengths[i]))
                found = -1;
            ordinals[first + i] = found;
        }
    }
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyObject *Lookups_release(Lookups *self, PyObject *Py_UNUSED(ignored)) {
    drop(self);
    Py_RETURN_NONE;
}

static PyMethodDef Lookups_methods[] = {
    {"token", (PyCFunction)(void (*)(void))Lookups_token, METH_FASTCALL | METH_KEYWORDS,
     "token(key, broker): the broker's token for the key; KeyError if it has none."},
    {"get_token", (PyCFunction)(void (*)(void))Lookups_get_token, METH_FASTCALL | METH_KEYWORDS,
     "get_token(key, broker, default=None)"},
    {"key", (PyCFunction)(void (*)(void))Lookups_key, METH_FASTCALL | METH_KEYWORDS,
     "key(token, feed): the key of a feed's token; KeyError if the feed has no such token."},
    {"get_key", (PyCFunction)(void (*)(void))Lookups_get_key, METH_FASTCALL | METH_KEYWORDS,
     "get_key(token, feed, default=None)"},
    {"feed_ordinals_into", (PyCFunction)(void (*)(void))Lookups_feed_ordinals_into,
     METH_FASTCALL, "feed_ordinals_into(tokens, feed, ordinals, rows=None): int feeds, uint64 in, int64 out."},
    {"ordinals_into", (PyCFunction)(void (*)(void))Lookups_ordinals_into, METH_FASTCALL,
     "ordinals_into(keys, ordinals): a list or tuple of str keys to int64 ordinals, -1 unknown."},
    {"release", (PyCFunction)Lookups_release, METH_NOARGS,
     "Drop the buffer exports; the lookups raise ValueError from then on."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Lookups_members[] = {
    {"sequence", T_ULONGLONG, offsetof(Lookups, sequence), 0,
     "the control sequence a following resolver compares with on every lookup"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LookupsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resolverd._speedups.Lookups",
    .tp_basicsize = sizeof(Lookups),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One snapshot's lookups, compiled (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lookups_init,
    .tp_dealloc = (destructor)Lookups_dealloc,
    .tp_traverse = (traverseproc)Lookups_traverse,
    .tp_clear = (inquiry)Lookups_clear,
    .tp_methods = Lookups_methods,
    .tp_members = Lookups_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "resolverd._speedups",
    "The client's lookups compiled, on the C reader include/resolverd.h.", -1, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&LookupsType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Lookups", (PyObject *)&LookupsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
