/* Dedupe keys in C: the 128-bit digests of key_table.py's KeyTable in a chained hash table,
 * blake2b-128 of many keys at once (dedupe_index.key_digests), and the index's columns
 * sorted for a save (dedupe_write._sorted).
 *
 * Why: merging a worker's batch inserted each key into a `bytes` bucket by copying the
 * bucket, so the cost of a key grew with the table: a 4.3 GB history took 10x the merge
 * time of an 859 MB one for 5x the keys (issue #23). Here a bucket is a block of the C heap
 * grown in place a few records at a time, and the number of buckets doubles with the table
 * (about 32 records a bucket), so an insert or lookup costs the same at any size, and a key
 * still takes ~21 bytes. Behaviour is the Python class's (tests/test_keys_native.py runs
 * both on the same operations); key_table.py keeps it for machines without a compiler.
 *
 * blake2b follows RFC 7693 (digest length 16, no key), checked against hashlib.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define DIGEST 16
#define RECORD 20 /* the digest, then the value (uint32, native order) */
#define MIN_BITS 8
#define PER_BUCKET 32 /* records a bucket, on average, before the buckets double */
#define STEP 4        /* records a bucket grows by */

/* ---- blake2b-128 ------------------------------------------------------------------ */

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

#define G(a, b, c, d, x, y)                  \
    do {                                     \
        v[a] = v[a] + v[b] + (x);            \
        v[d] = rotr(v[d] ^ v[a], 32);        \
        v[c] = v[c] + v[d];                  \
        v[b] = rotr(v[b] ^ v[c], 24);        \
        v[a] = v[a] + v[b] + (y);            \
        v[d] = rotr(v[d] ^ v[a], 16);        \
        v[c] = v[c] + v[d];                  \
        v[b] = rotr(v[b] ^ v[c], 63);        \
    } while (0)

static void compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = IV[i]; }
    v[12] ^= t;
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = load64(block + 8 * i);
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = SIGMA[r % 10];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

static void blake2b_16(const uint8_t *in, Py_ssize_t n, uint8_t out[DIGEST]) {
    uint64_t h[8];
    uint8_t block[128];
    uint64_t t = 0;
    memcpy(h, IV, sizeof(h));
    h[0] ^= 0x01010000ULL ^ DIGEST;
    while (n > 128) {
        t += 128;
        compress(h, in, t, 0);
        in += 128;
        n -= 128;
    }
    memset(block, 0, sizeof(block));
    memcpy(block, in, (size_t)n);
    t += (uint64_t)n;
    compress(h, block, t, 1);
    for (int i = 0; i < DIGEST; i++) out[i] = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
}

PyDoc_STRVAR(digests_doc,
"digests(keys)\n--\n\n"
"blake2b-128 of each key's UTF-8, joined (dedupe_index.key_digests); None if a key is\n"
"not a str or holds a surrogate (the Python path encodes those).");

static PyObject *digests(PyObject *self, PyObject *keys) {
    PyObject *seq = PySequence_Fast(keys, "keys must be iterable");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * DIGEST);
    if (out == NULL) { Py_DECREF(seq); return NULL; }
    uint8_t *w = (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t len;
        const char *utf8 = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &len) : NULL;
        if (utf8 == NULL) {
            PyErr_Clear();
            Py_DECREF(seq);
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        blake2b_16((const uint8_t *)utf8, len, w + i * DIGEST);
    }
    Py_DECREF(seq);
    return out;
}

/* ---- the table -------------------------------------------------------------------- */

typedef struct {
    uint8_t *records;
    uint32_t n, cap;
} Bucket;

typedef struct {
    PyObject_HEAD
    Bucket *buckets;
    Py_ssize_t bits, count;
} Table;

static inline Py_ssize_t bucket_of(const uint8_t *digest, Py_ssize_t bits) {
    uint64_t h;
    memcpy(&h, digest, 8);
    return (Py_ssize_t)(h & (((uint64_t)1 << bits) - 1));
}

static Py_ssize_t find(const Bucket *b, const uint8_t *digest) {
    for (uint32_t i = 0; i < b->n; i++) {
        const uint8_t *r = b->records + (size_t)i * RECORD;
        if (memcmp(r, digest, DIGEST) == 0) return i;
    }
    return -1;
}

static int reserve(Bucket *b, uint32_t extra) {
    if (b->n + extra <= b->cap) return 0;
    uint32_t cap = (b->n + extra + STEP - 1) / STEP * STEP;
    uint8_t *records = (uint8_t *)PyMem_RawRealloc(b->records, (size_t)cap * RECORD);
    if (records == NULL) { PyErr_NoMemory(); return -1; }
    b->records = records;
    b->cap = cap;
    return 0;
}

static void append(Bucket *b, const uint8_t *digest, uint32_t value) {
    uint8_t *r = b->records + (size_t)b->n * RECORD;
    memcpy(r, digest, DIGEST);
    memcpy(r + DIGEST, &value, 4);
    b->n++;
}

static void free_buckets(Bucket *buckets, Py_ssize_t bits) {
    if (buckets == NULL) return;
    for (Py_ssize_t i = 0; i < ((Py_ssize_t)1 << bits); i++) PyMem_RawFree(buckets[i].records);
    PyMem_RawFree(buckets);
}

/* Before `extra` more keys: double the buckets until they hold PER_BUCKET each on average
 * (done before adding, so remove_last finds what add_new appended at the ends). */
static int grow(Table *t, Py_ssize_t extra) {
    Py_ssize_t bits = t->bits;
    while (t->count + extra > ((Py_ssize_t)PER_BUCKET << bits) && bits < 28) bits++;
    if (bits == t->bits) return 0;
    Py_ssize_t nb = (Py_ssize_t)1 << bits;
    Bucket *fresh = (Bucket *)PyMem_RawCalloc((size_t)nb, sizeof(Bucket));
    if (fresh == NULL) { PyErr_NoMemory(); return -1; }
    Py_ssize_t old = (Py_ssize_t)1 << t->bits;
    for (Py_ssize_t i = 0; i < old; i++) { /* count first: each new bucket sized once */
        const Bucket *b = &t->buckets[i];
        for (uint32_t k = 0; k < b->n; k++) fresh[bucket_of(b->records + (size_t)k * RECORD, bits)].cap++;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        uint32_t want = fresh[i].cap;
        fresh[i].cap = 0;
        if (want && reserve(&fresh[i], want) < 0) { free_buckets(fresh, bits); return -1; }
    }
    for (Py_ssize_t i = 0; i < old; i++) {
        const Bucket *b = &t->buckets[i];
        for (uint32_t k = 0; k < b->n; k++) {
            const uint8_t *r = b->records + (size_t)k * RECORD;
            uint32_t value;
            memcpy(&value, r + DIGEST, 4);
            append(&fresh[bucket_of(r, bits)], r, value);
        }
    }
    free_buckets(t->buckets, t->bits);
    t->buckets = fresh;
    t->bits = bits;
    return 0;
}

/* Buckets from the start, so a table made without __init__ (`KeyTable.__new__`) is empty
 * rather than a NULL dereference. */
static PyObject *Table_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Table *self = (Table *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->buckets = (Bucket *)PyMem_RawCalloc((size_t)1 << MIN_BITS, sizeof(Bucket));
    if (self->buckets == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->bits = MIN_BITS;
    self->count = 0;
    return (PyObject *)self;
}

static int Table_init(Table *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"bits", NULL};
    Py_ssize_t bits = MIN_BITS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n", names, &bits)) return -1;
    if (bits < 1 || bits > 28) {
        PyErr_SetString(PyExc_ValueError, "bits out of range");
        return -1;
    }
    free_buckets(self->buckets, self->bits);
    self->buckets = (Bucket *)PyMem_RawCalloc((size_t)1 << bits, sizeof(Bucket));
    if (self->buckets == NULL) { PyErr_NoMemory(); return -1; }
    self->bits = bits;
    self->count = 0;
    return 0;
}

static void Table_dealloc(Table *self) {
    free_buckets(self->buckets, self->bits);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Table_len(Table *self) { return self->count; }

static int digest_arg(Py_buffer *buf) {
    if (buf->len != DIGEST) {
        PyErr_SetString(PyExc_ValueError, "a digest is 16 bytes");
        return -1;
    }
    return 0;
}

static PyObject *Table_get(Table *self, PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    if (digest_arg(&buf) < 0) { PyBuffer_Release(&buf); return NULL; }
    const uint8_t *digest = (const uint8_t *)buf.buf;
    const Bucket *b = &self->buckets[bucket_of(digest, self->bits)];
    Py_ssize_t at = find(b, digest);
    long long value = -1;
    if (at >= 0) {
        uint32_t v;
        memcpy(&v, b->records + (size_t)at * RECORD + DIGEST, 4);
        value = (long long)v;
    }
    PyBuffer_Release(&buf);
    return PyLong_FromLongLong(value);
}

static PyObject *Table_put(Table *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t value;
    if (!PyArg_ParseTuple(args, "y*n", &buf, &value)) return NULL;
    PyObject *result = NULL;
    if (digest_arg(&buf) < 0) goto done;
    if (value < 0 || value > 0xFFFFFFFFL) { PyErr_SetString(PyExc_OverflowError, "value out of uint32"); goto done; }
    if (grow(self, 1) < 0) goto done;
    const uint8_t *digest = (const uint8_t *)buf.buf;
    Bucket *b = &self->buckets[bucket_of(digest, self->bits)];
    Py_ssize_t at = find(b, digest);
    uint32_t v = (uint32_t)value;
    if (at >= 0) {
        memcpy(b->records + (size_t)at * RECORD + DIGEST, &v, 4);
    } else {
        if (reserve(b, 1) < 0) goto done;
        append(b, digest, v);
        self->count++;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    return result;
}

/* Take out the last record of the bucket of each digest, last first: what add_new appended. */
static void pop_last(Table *self, const uint8_t *digests, Py_ssize_t n) {
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        Bucket *b = &self->buckets[bucket_of(digests + i * DIGEST, self->bits)];
        if (b->n) b->n--;
    }
}

static PyObject *Table_add_new(Table *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"digests", "values", "offset", "check", NULL};
    Py_buffer keys, values;
    Py_ssize_t offset = 0;
    int check = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*y*|n$p", names, &keys, &values, &offset, &check))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = values.len / 4;
    if (offset < 0 || offset > 0xFFFFFFFFL) {
        PyErr_SetString(PyExc_OverflowError, "offset out of uint32");
        goto done;
    }
    if (values.len % 4 || keys.len != n * DIGEST) {
        PyErr_SetString(PyExc_ValueError, "digests and values of unequal length");
        goto done;
    }
    if (grow(self, n) < 0) goto done;
    const uint8_t *digests = (const uint8_t *)keys.buf;
    const uint8_t *vals = (const uint8_t *)values.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *digest = digests + i * DIGEST;
        Bucket *b = &self->buckets[bucket_of(digest, self->bits)];
        if (check && find(b, digest) >= 0) {
            pop_last(self, digests, i);
            result = Py_NewRef(Py_False);
            goto done;
        }
        uint32_t v;
        memcpy(&v, vals + i * 4, 4);
        if ((uint64_t)v + (uint64_t)offset > 0xFFFFFFFFULL) { /* as Python's array("I") */
            pop_last(self, digests, i);
            PyErr_SetString(PyExc_OverflowError, "value + offset out of uint32");
            goto done;
        }
        v += (uint32_t)offset;
        if (reserve(b, 1) < 0) { pop_last(self, digests, i); goto done; }
        append(b, digest, v);
    }
    self->count += n;
    result = Py_NewRef(Py_True);
done:
    PyBuffer_Release(&keys);
    PyBuffer_Release(&values);
    return result;
}

static PyObject *Table_remove_last(Table *self, PyObject *arg) {
    Py_buffer keys;
    if (PyObject_GetBuffer(arg, &keys, PyBUF_SIMPLE) < 0) return NULL;
    Py_ssize_t n = keys.len / DIGEST;
    pop_last(self, (const uint8_t *)keys.buf, n);
    self->count -= n;
    PyBuffer_Release(&keys);
    Py_RETURN_NONE;
}

static PyObject *array_type = NULL;

static PyObject *Table_columns(Table *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *digests = PyBytes_FromStringAndSize(NULL, self->count * DIGEST);
    PyObject *values = PyBytes_FromStringAndSize(NULL, self->count * 4);
    PyObject *result = NULL;
    if (digests == NULL || values == NULL) goto done;
    uint8_t *d = (uint8_t *)PyBytes_AS_STRING(digests), *v = (uint8_t *)PyBytes_AS_STRING(values);
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < ((Py_ssize_t)1 << self->bits); i++) {
        const Bucket *b = &self->buckets[i];
        for (uint32_t j = 0; j < b->n && k < self->count; j++, k++) {
            memcpy(d + k * DIGEST, b->records + (size_t)j * RECORD, DIGEST);
            memcpy(v + k * 4, b->records + (size_t)j * RECORD + DIGEST, 4);
        }
    }
    PyObject *arr = PyObject_CallFunction(array_type, "sO", "I", values);
    if (arr == NULL) goto done;
    result = PyTuple_Pack(2, digests, arr);
    Py_DECREF(arr);
done:
    Py_XDECREF(digests);
    Py_XDECREF(values);
    return result;
}

static PyObject *Table_count(Table *self, void *Py_UNUSED(closure)) { return PyLong_FromSsize_t(self->count); }

static PyObject *Table_nbytes(Table *self, void *Py_UNUSED(closure)) {
    return PyLong_FromSsize_t(self->count * RECORD);
}

static PyMethodDef Table_methods[] = {
    {"get", (PyCFunction)Table_get, METH_O, "The value stored for `digest`, or -1."},
    {"put", (PyCFunction)Table_put, METH_VARARGS, "Store `value` for `digest`, replacing what was stored."},
    {"add_new", (PyCFunction)(void (*)(void))Table_add_new, METH_VARARGS | METH_KEYWORDS,
     "Store joined digests with `values` (+ `offset`). With `check`, False (and nothing\n"
     "stored) if one is stored already; without, the caller knows none is."},
    {"remove_last", (PyCFunction)Table_remove_last, METH_O,
     "Take out the joined digests that the last `add_new` stored."},
    {"columns", (PyCFunction)Table_columns, METH_NOARGS, "Every digest (joined) and its value."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Table_getset[] = {
    {"count", (getter)Table_count, NULL, "Keys stored.", NULL},
    {"nbytes", (getter)Table_nbytes, NULL, "Bytes the records take (20 a key).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Table_as_sequence = {.sq_length = (lenfunc)Table_len};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokentop._keys_native.KeyTable",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_as_sequence = &Table_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Digest -> uint32 in a chained hash table of the C heap (see the module).",
    .tp_methods = Table_methods,
    .tp_getset = Table_getset,
    .tp_init = (initproc)Table_init,
    .tp_new = Table_new,
};

/* ---- sorting the index's columns -------------------------------------------------- */

typedef struct {
    uint64_t hi, lo;
    uint32_t value;
} Row;

static int row_cmp(const void *a, const void *b) {
    const Row *x = (const Row *)a, *y = (const Row *)b;
    if (x->hi != y->hi) return x->hi < y->hi ? -1 : 1;
    if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
    return (x->value > y->value) - (x->value < y->value);
}

PyDoc_STRVAR(sorted_rows_doc,
"sorted_rows(his, los, values)\n--\n\n"
"The columns (uint64, uint64, uint32, native order) sorted by (hi, lo, value), as three\n"
"bytes: dedupe_write._sorted, whose Python sort of cut records took ~0.1 s a first save.");

static PyObject *sorted_rows(PyObject *self, PyObject *args) {
    Py_buffer his, los, values;
    if (!PyArg_ParseTuple(args, "y*y*y*", &his, &los, &values)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = his.len / 8;
    Row *rows = NULL;
    if (his.len % 8 || los.len != his.len || values.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "columns of unequal length");
        goto done;
    }
    rows = (Row *)PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(Row));
    if (rows == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(&rows[i].hi, (const char *)his.buf + i * 8, 8);
        memcpy(&rows[i].lo, (const char *)los.buf + i * 8, 8);
        memcpy(&rows[i].value, (const char *)values.buf + i * 4, 4);
    }
    Py_BEGIN_ALLOW_THREADS
    qsort(rows, (size_t)n, sizeof(Row), row_cmp);
    Py_END_ALLOW_THREADS
    PyObject *h = PyBytes_FromStringAndSize(NULL, n * 8), *l = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *v = PyBytes_FromStringAndSize(NULL, n * 4);
    if (h && l && v) {
        for (Py_ssize_t i = 0; i < n; i++) {
            memcpy(PyBytes_AS_STRING(h) + i * 8, &rows[i].hi, 8);
            memcpy(PyBytes_AS_STRING(l) + i * 8, &rows[i].lo, 8);
            memcpy(PyBytes_AS_STRING(v) + i * 4, &rows[i].value, 4);
        }
        result = PyTuple_Pack(3, h, l, v);
    }
    Py_XDECREF(h);
    Py_XDECREF(l);
    Py_XDECREF(v);
done:
    PyMem_RawFree(rows);
    PyBuffer_Release(&his);
    PyBuffer_Release(&los);
    PyBuffer_Release(&values);
    return result;
}

static PyMethodDef methods[] = {
    {"digests", digests, METH_O, digests_doc},
    {"sorted_rows", sorted_rows, METH_VARARGS, sorted_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_keys_native", "Dedupe keys in C (see key_table.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__keys_native(void) {
    PyObject *array = PyImport_ImportModule("array");
    if (array == NULL) return NULL;
    array_type = PyObject_GetAttrString(array, "array");
    Py_DECREF(array);
    if (array_type == NULL || PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "KeyTable", (PyObject *)&TableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
