/* The Claude Code parser's hot path in C: decode a buffer of transcript lines and build the
 * same runs as ClaudeFileParser._read (sources/claude_parser.py), or give up.
 *
 * Why: on a cold scan, decoding the lines and turning them into runs was half of tokentop's
 * CPU (issue #23); in C it is a tenth of that. Why it is safe: it handles only lines it can
 * prove msgspec would decode to the same Record, and returns None on anything else (a line
 * that is not one JSON object, an unknown escape, a number or time of another shape, a
 * response without an id, a duplicate field, nesting over MAX_DEPTH...). The caller then
 * runs the Python path on the whole buffer, which stays the reference: it counts bad lines
 * and builds local keys. tests/test_claude_native.py checks that both give equal runs and
 * parser state on real, generated and hostile input.
 *
 * Input bytes are untrusted: every read is bounded by the line's end, depth is capped, and
 * counts are capped at MAX_COUNT as msgspec's `Count` does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MAX_DEPTH 64
#define MAX_BLOCKS 65536 /* content blocks a line; real ones have a few */
#define MAX_COUNT 1000000000000000LL /* base.MAX_COUNT */
#define MAX_LINE_BYTES (16 * 1024 * 1024) /* base.MAX_LINE_BYTES */

/* ---- strings ---------------------------------------------------------------------- */

typedef struct {
    const char *p; /* decoded UTF-8 bytes (in the buffer, or in an allocation of the feed) */
    Py_ssize_t n;
    int set; /* 1: a string; 0: absent or null */
} Str;

typedef struct Alloc {
    struct Alloc *next;
    char data[];
} Alloc;

typedef struct {
    Alloc *allocs; /* decoded escaped strings, freed when the call ends */
} Arena;

static char *arena_new(Arena *a, Py_ssize_t n) {
    Alloc *block = (Alloc *)PyMem_Malloc(sizeof(Alloc) + (size_t)n + 1);
    if (block == NULL) return NULL;
    block->next = a->allocs;
    a->allocs = block;
    return block->data;
}

static void arena_free(Arena *a) {
    while (a->allocs) {
        Alloc *next = a->allocs->next;
        PyMem_Free(a->allocs);
        a->allocs = next;
    }
}

static inline int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && is_ws(*p)) p++;
    return p;
}

static int hex4(const char *p, const char *end, unsigned *out) {
    unsigned v = 0;
    if (end - p < 4) return 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/* One escape after the backslash at `p`: where it ends, its code point in *cp, or NULL if
 * msgspec might reject it (anything but the JSON escapes, a surrogate not in a pair). */
static const char *escape(const char *p, const char *end, unsigned *cp) {
    if (p + 1 >= end) return NULL;
    switch (p[1]) {
    case '"': *cp = '"'; return p + 2;
    case '\\': *cp = '\\'; return p + 2;
    case '/': *cp = '/'; return p + 2;
    case 'b': *cp = '\b'; return p + 2;
    case 'f': *cp = '\f'; return p + 2;
    case 'n': *cp = '\n'; return p + 2;
    case 'r': *cp = '\r'; return p + 2;
    case 't': *cp = '\t'; return p + 2;
    case 'u': {
        unsigned hi, lo;
        if (!hex4(p + 2, end, &hi)) return NULL;
        if (hi >= 0xDC00 && hi <= 0xDFFF) return NULL;
        if (hi < 0xD800 || hi > 0xDBFF) { *cp = hi; return p + 6; }
        if (end - (p + 6) < 6 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, end, &lo)) return NULL;
        if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
        *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        return p + 12;
    }
    default: return NULL;
    }
}

/* The first byte at or after p that is a quote, a backslash, a control character or (when
 * `high`) any byte >= 0x80; `end` if none. */
static inline const char *scan_string(const char *p, const char *end, int high) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\');
    const __m128i below = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* unsigned v < 0x20: min(v, 0x1f) == v */
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)), ctl);
        int mask = _mm_movemask_epi8(hit);
        if (high) mask |= _mm_movemask_epi8(v);
        if (mask) return p + __builtin_ctz((unsigned)mask);
        p += 16;
    }
    (void)below;
#endif
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\' || c < 0x20 || (high && c >= 0x80)) return p;
        p++;
    }
    return end;
}

/* Skip a string whose opening quote is at p: where it ends, or NULL if msgspec would
 * reject it (a control character, a bad escape) or it does not end on this line. msgspec
 * does not check UTF-8 in strings it skips, so neither does this. */
static const char *skip_string(const char *p, const char *end) {
    p++;
    for (;;) {
        p = scan_string(p, end, 0);
        if (p >= end) return NULL;
        if (*p == '"') return p + 1;
        if (*p == '\\') {
            unsigned cp;
            p = escape(p, end, &cp);
            if (p == NULL) return NULL;
            continue;
        }
        return NULL; /* a control character */
    }
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int valid_utf8(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[i + 1] < 0xA0) return 0;
            if (c == 0xED && s[i + 1] >= 0xA0) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[i + 1] < 0x90) return 0;
            if (c == 0xF4 && s[i + 1] >= 0x90) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* A string msgspec would decode into a `str`: where it ends, or NULL if msgspec might
 * reject it (a control character, a bad escape, bad UTF-8). *escaped: whether it holds an
 * escape. Escapes are ASCII and give whole code points, so checking the raw bytes' UTF-8
 * is checking the decoded string's. */
static const char *check_string(const char *p, const char *end, int *escaped) {
    const char *start = ++p;
    int high = 0;
    *escaped = 0;
    for (;;) {
        p = scan_string(p, end, 1);
        if (p >= end) return NULL;
        unsigned char c = (unsigned char)*p;
        if (c >= 0x80) { high = 1; p++; continue; }
        if (c == '"') {
            if (high && !valid_utf8((const unsigned char *)start, p - start)) return NULL;
            return p + 1;
        }
        if (c == '\\') {
            unsigned cp;
            p = escape(p, end, &cp);
            if (p == NULL) return NULL;
            *escaped = 1;
            continue;
        }
        return NULL;
    }
}

/* A string msgspec decodes into a `str` field: its decoded bytes in *out, valid UTF-8.
 * Returns where it ends, or NULL to give up. */
static const char *read_string(const char *p, const char *end, Str *out, Arena *arena) {
    int escaped;
    const char *after = check_string(p, end, &escaped);
    if (after == NULL) return NULL;
    const char *start = p + 1, *close = after - 1;
    out->set = 1;
    if (!escaped) {
        out->p = start;
        out->n = close - start;
        return after;
    }
    /* Escapes: decoded into an allocation of the call (rare in practice). */
    char *buf = arena_new(arena, close - start);
    if (buf == NULL) return NULL;
    char *w = buf;
    p = start;
    while (p < close) {
        unsigned char c = (unsigned char)*p;
        if (c == '\\') {
            unsigned cp;
            const char *next = escape(p, end, &cp);
            if (next == NULL || next > close) return NULL;
            if (cp < 0x80) *w++ = (char)cp;
            else if (cp < 0x800) { *w++ = (char)(0xC0 | (cp >> 6)); *w++ = (char)(0x80 | (cp & 0x3F)); }
            else if (cp < 0x10000) {
                *w++ = (char)(0xE0 | (cp >> 12));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *w++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *w++ = (char)(0xF0 | (cp >> 18));
                *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *w++ = (char)(0x80 | (cp & 0x3F));
            }
            p = next;
        } else if (c < 0x20) {
            return NULL;
        } else {
            *w++ = (char)c;
            p++;
        }
    }
    if (!valid_utf8((const unsigned char *)buf, w - buf)) return NULL;
    out->p = buf;
    out->n = w - buf;
    return after;
}

static inline int str_is(const Str *s, const char *lit, Py_ssize_t n) {
    return s->set && s->n == n && memcmp(s->p, lit, (size_t)n) == 0;
}

/* ---- values ----------------------------------------------------------------------- */

static const char *skip_value(const char *p, const char *end, int depth);

/* A JSON number, strictly by the grammar (msgspec accepts every one of these). */
static const char *skip_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return NULL;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

static const char *literal(const char *p, const char *end, const char *word, Py_ssize_t n) {
    if (end - p < n || memcmp(p, word, (size_t)n) != 0) return NULL;
    return p + n;
}

static const char *skip_container(const char *p, const char *end, int depth, char close) {
    if (depth >= MAX_DEPTH) return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
        if (close == '}') {
            if (p >= end || *p != '"') return NULL;
            p = skip_string(p, end);
            if (p == NULL) return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':') return NULL;
            p = skip_ws(p + 1, end);
        }
        p = skip_value(p, end, depth + 1);
        if (p == NULL) return NULL;
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *skip_value(const char *p, const char *end, int depth) {
    if (p >= end) return NULL;
    switch (*p) {
    case '"': return skip_string(p, end);
    case '{': return skip_container(p, end, depth, '}');
    case '[': return skip_container(p, end, depth, ']');
    case 't': return literal(p, end, "true", 4);
    case 'f': return literal(p, end, "false", 5);
    case 'n': return literal(p, end, "null", 4);
    default: return skip_number(p, end);
    }
}

/* A `str | None` field (or `str` when !nullable). */
static const char *opt_string(const char *p, const char *end, Str *out, Arena *arena, int nullable) {
    if (p < end && *p == '"') return read_string(p, end, out, arena);
    if (nullable && (p = literal(p, end, "null", 4)) != NULL) { out->set = 0; return p; }
    return NULL;
}

/* A `bool | None` field: -1 null, 0, 1. */
static const char *opt_bool(const char *p, const char *end, int *out) {
    const char *q;
    if ((q = literal(p, end, "true", 4))) { *out = 1; return q; }
    if ((q = literal(p, end, "false", 5))) { *out = 0; return q; }
    if ((q = literal(p, end, "null", 4))) { *out = -1; return q; }
    return NULL;
}

/* A `Count`: a plain non-negative integer up to MAX_COUNT ("-0", floats, null: give up). */
static const char *count(const char *p, const char *end, long long *out) {
    long long v = 0;
    const char *start = p;
    if (p >= end || *p < '0' || *p > '9') return NULL;
    if (*p == '0') p++;
    else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (p - start >= 16) return NULL;
            v = v * 10 + (*p - '0');
            p++;
        }
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E' || (*p >= '0' && *p <= '9'))) return NULL;
    if (v > MAX_COUNT) return NULL;
    *out = v;
    return p;
}

/* ---- records ---------------------------------------------------------------------- */

typedef struct {
    Str tool_use_id, type, id, name;
    const char *input, *input_end, *content, *content_end;
    int is_error;
} Block;

typedef struct {
    int sidechain; /* -1 null */
    Str cwd, sid, branch, type, uuid, req;
    int has_cost;
    double cost;
    int has_ts;
    double ts;
    int has_message;
    Str mid, model;
    int content_kind; /* 0 null/absent, 1 str, 2 list */
    Py_ssize_t block_first, block_count; /* into the feed's block array */
    int has_usage, has_split;
    long long in, cc, cr, out, e5, e1;
} Line;

typedef struct {
    Block *items;
    Py_ssize_t len, cap;
} Blocks;

static Block *blocks_add(Blocks *b) {
    if (b->len == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 64;
        Block *items = (Block *)PyMem_Realloc(b->items, (size_t)cap * sizeof(Block));
        if (items == NULL) return NULL;
        b->items = items;
        b->cap = cap;
    }
    Block *block = &b->items[b->len++];
    memset(block, 0, sizeof(Block));
    block->is_error = -1;
    return block;
}

static const char NULL_RAW[] = "null";

/* An object key: its bytes (no escapes: a key with one gives up, msgspec would unescape
 * it and might match a field). */
static const char *read_key(const char *p, const char *end, const char **key, Py_ssize_t *n) {
    if (p >= end || *p != '"') return NULL;
    const char *start = p + 1;
    const char *q = scan_string(start, end, 1);
    if (q >= end || *q != '"') return NULL;
    *key = start;
    *n = q - start;
    return q + 1;
}

#define KEY(lit) (n == (Py_ssize_t)sizeof(lit) - 1 && memcmp(key, lit, sizeof(lit) - 1) == 0)
#define ONCE(bit) do { if (seen & (1u << (bit))) return NULL; seen |= 1u << (bit); } while (0)

/* Object members, shared by every struct: calls `field` for each key, which returns where
 * the value ends (skipping it if unknown) or NULL. */
#define OBJECT_LOOP(FIELD_CODE)                                                            \
    if (p >= end || *p != '{') return NULL;                                                \
    p = skip_ws(p + 1, end);                                                               \
    if (p < end && *p == '}') return p + 1;                                                \
    for (;;) {                                                                             \
        const char *key;                                                                   \
        Py_ssize_t n;                                                                      \
        p = read_key(p, end, &key, &n);                                                    \
        if (p == NULL) return NULL;                                                        \
        p = skip_ws(p, end);                                                               \
        if (p >= end || *p != ':') return NULL;                                            \
        p = skip_ws(p + 1, end);                                                           \
        FIELD_CODE                                                                         \
        if (p == NULL) return NULL;                                                        \
        p = skip_ws(p, end);                                                               \
        if (p >= end) return NULL;                                                         \
        if (*p == '}') return p + 1;                                                       \
        if (*p != ',') return NULL;                                                        \
        p = skip_ws(p + 1, end);                                                           \
    }

static const char *read_split(const char *p, const char *end, Line *L) {
    unsigned seen = 0;
    OBJECT_LOOP(
        if (KEY("ephemeral_5m_input_tokens")) { ONCE(0); p = count(p, end, &L->e5); }
        else if (KEY("ephemeral_1h_input_tokens")) { ONCE(1); p = count(p, end, &L->e1); }
        else p = skip_value(p, end, 3);
    )
}

static const char *read_usage(const char *p, const char *end, Line *L) {
    unsigned seen = 0;
    OBJECT_LOOP(
        if (KEY("input_tokens")) { ONCE(0); p = count(p, end, &L->in); }
        else if (KEY("cache_creation_input_tokens")) { ONCE(1); p = count(p, end, &L->cc); }
        else if (KEY("cache_read_input_tokens")) { ONCE(2); p = count(p, end, &L->cr); }
        else if (KEY("output_tokens")) { ONCE(3); p = count(p, end, &L->out); }
        else if (KEY("cache_creation")) {
            ONCE(4);
            const char *q = literal(p, end, "null", 4);
            if (q) { L->has_split = 0; L->e5 = L->e1 = 0; p = q; }
            else { L->has_split = 1; L->e5 = L->e1 = 0; p = read_split(p, end, L); }
        }
        else p = skip_value(p, end, 2);
    )
}

static const char *read_block(const char *p, const char *end, Block *B, Arena *arena) {
    unsigned seen = 0;
    OBJECT_LOOP(
        if (KEY("tool_use_id")) { ONCE(0); p = opt_string(p, end, &B->tool_use_id, arena, 0); }
        else if (KEY("type")) { ONCE(1); p = opt_string(p, end, &B->type, arena, 0); }
        else if (KEY("id")) { ONCE(2); p = opt_string(p, end, &B->id, arena, 0); }
        else if (KEY("name")) { ONCE(3); p = opt_string(p, end, &B->name, arena, 0); }
        else if (KEY("input")) { ONCE(4); B->input = p; p = skip_value(p, end, 3); B->input_end = p; }
        else if (KEY("content")) { ONCE(5); B->content = p; p = skip_value(p, end, 3); B->content_end = p; }
        else if (KEY("is_error")) { ONCE(6); p = opt_bool(p, end, &B->is_error); }
        else p = skip_value(p, end, 3);
    )
}

static const char *read_content(const char *p, const char *end, Line *L, Blocks *blocks, Arena *arena) {
    int escaped;
    if (p < end && *p == '"') { L->content_kind = 1; return check_string(p, end, &escaped); }
    const char *q = literal(p, end, "null", 4);
    if (q) { L->content_kind = 0; return q; }
    if (p >= end || *p != '[') return NULL;
    L->content_kind = 2;
    L->block_first = blocks->len;
    L->block_count = 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']') return p + 1;
    for (;;) {
        if (L->block_count >= MAX_BLOCKS) return NULL; /* a junk line: Python's path counts it */
        Block *B = blocks_add(blocks);
        if (B == NULL) return NULL;
        p = read_block(p, end, B, arena);
        if (p == NULL) return NULL;
        L->block_count++;
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == ']') return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *read_message(const char *p, const char *end, Line *L, Blocks *blocks, Arena *arena) {
    unsigned seen = 0;
    OBJECT_LOOP(
        if (KEY("id")) { ONCE(0); p = opt_string(p, end, &L->mid, arena, 1); }
        else if (KEY("model")) { ONCE(1); p = opt_string(p, end, &L->model, arena, 1); }
        else if (KEY("content")) { ONCE(2); p = read_content(p, end, L, blocks, arena); }
        else if (KEY("usage")) {
            ONCE(3);
            const char *q = literal(p, end, "null", 4);
            if (q) { L->has_usage = 0; p = q; }
            else {
                L->has_usage = 1;
                L->in = L->cc = L->cr = L->out = L->e5 = L->e1 = 0;
                L->has_split = 0;
                p = read_usage(p, end, L);
            }
        }
        else p = skip_value(p, end, 1);
    )
}

static const int DAYS[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

static int digits(const char *p, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm). */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* `epoch(record.timestamp)` for "YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z" in 1970-2200; other forms
 * (msgspec accepts many) give up. Computed as datetime.timestamp does: whole microseconds
 * over 10**6, exact while they fit in a double's 53 bits. */
static int parse_time(const Str *s, double *out) {
    const char *p = s->p;
    Py_ssize_t n = s->n;
    if (n < 20 || p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' || p[16] != ':' ||
        p[n - 1] != 'Z')
        return 0;
    int y = digits(p, 4), mo = digits(p + 5, 2), d = digits(p + 8, 2);
    int h = digits(p + 11, 2), mi = digits(p + 14, 2), sec = digits(p + 17, 2);
    if (y < 1970 || y > 2200 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 ||
        mi > 59 || sec < 0 || sec > 59)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > DAYS[mo - 1] + (mo == 2 && leap)) return 0;
    long long us = 0;
    if (n > 20) {
        Py_ssize_t frac = n - 21;
        if (p[19] != '.' || frac < 1 || frac > 6) return 0;
        int f = digits(p + 20, (int)frac);
        if (f < 0) return 0;
        us = f;
        for (Py_ssize_t i = frac; i < 6; i++) us *= 10;
    }
    long long secs = days_from_civil(y, mo, d) * 86400LL + h * 3600LL + mi * 60LL + sec;
    long long total = secs * 1000000LL + us;
    if (total >= (1LL << 53)) return 0;
    *out = (double)total / 1e6;
    return 1;
}

/* A `float | None` (costUSD): any JSON number, through Python's correctly rounded parser
 * as msgspec's is; very long or infinite ones give up. */
static const char *read_cost(const char *p, const char *end, Line *L) {
    const char *q = literal(p, end, "null", 4);
    if (q) { L->has_cost = 0; return q; }
    q = skip_number(p, end);
    if (q == NULL || q - p > 40) return NULL;
    char buf[48];
    memcpy(buf, p, (size_t)(q - p));
    buf[q - p] = 0;
    double v = PyOS_string_to_double(buf, NULL, NULL);
    if (v == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return NULL; }
    if (!(v > -1e300 && v < 1e300)) return NULL;
    if (v == 0.0 && memchr(buf, '.', (size_t)(q - p)) == NULL && memchr(buf, 'e', (size_t)(q - p)) == NULL &&
        memchr(buf, 'E', (size_t)(q - p)) == NULL)
        v = 0.0; /* msgspec reads "-0" as the integer 0, then a float: +0.0 */
    L->has_cost = 1;
    L->cost = v;
    return q;
}

static const char *read_line(const char *p, const char *end, Line *L, Blocks *blocks, Arena *arena) {
    unsigned seen = 0;
    memset(L, 0, sizeof(Line));
    L->sidechain = -1;
    OBJECT_LOOP(
        if (KEY("isSidechain")) { ONCE(0); p = opt_bool(p, end, &L->sidechain); }
        else if (KEY("cwd")) { ONCE(1); p = opt_string(p, end, &L->cwd, arena, 1); }
        else if (KEY("sessionId")) { ONCE(2); p = opt_string(p, end, &L->sid, arena, 1); }
        else if (KEY("gitBranch")) { ONCE(3); p = opt_string(p, end, &L->branch, arena, 1); }
        else if (KEY("type")) { ONCE(4); p = opt_string(p, end, &L->type, arena, 0); }
        else if (KEY("message")) {
            ONCE(5);
            const char *q = literal(p, end, "null", 4);
            if (q) { L->has_message = 0; p = q; }
            else { L->has_message = 1; p = read_message(p, end, L, blocks, arena); }
        }
        else if (KEY("uuid")) { ONCE(6); p = opt_string(p, end, &L->uuid, arena, 1); }
        else if (KEY("costUSD")) { ONCE(7); p = read_cost(p, end, L); }
        else if (KEY("requestId")) { ONCE(8); p = opt_string(p, end, &L->req, arena, 1); }
        else if (KEY("timestamp")) {
            ONCE(9);
            Str ts = {0};
            p = opt_string(p, end, &ts, arena, 1);
            if (p != NULL && ts.set) {
                if (!parse_time(&ts, &L->ts)) return NULL;
                L->has_ts = 1;
            }
        }
        else p = skip_value(p, end, 0);
    )
}

/* ---- runs ------------------------------------------------------------------------- */

typedef struct {
    PyObject *list; /* calls or results (borrowed from a run in items) */
    Py_ssize_t at;
    PyObject *session; /* borrowed: held by its run */
    const char *raw, *raw_end;
} ToHash;

typedef struct {
    ToHash *items;
    Py_ssize_t len, cap;
} HashList;

static int hash_add(HashList *h, PyObject *list, Py_ssize_t at, PyObject *session, const char *raw,
                    const char *raw_end) {
    if (h->len == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 256;
        ToHash *items = (ToHash *)PyMem_Realloc(h->items, (size_t)cap * sizeof(ToHash));
        if (items == NULL) { PyErr_NoMemory(); return -1; }
        h->items = items;
        h->cap = cap;
    }
    ToHash *e = &h->items[h->len++];
    e->list = list;
    e->at = at;
    e->session = session;
    e->raw = raw;
    e->raw_end = raw_end;
    return 0;
}

typedef struct {
    /* given */
    PyObject *session_key, *run_type, *info_type, *changing, *output_hash, *short_hash;
    int from_path;
    Py_ssize_t hashed_per_session;
    /* parser state */
    PyObject *session_id; /* str, owned */
    const char *sid_p; Py_ssize_t sid_n; /* its UTF-8 */
    int announced;
    PyObject *last_key; /* str, owned */
    const char *last_mid; Py_ssize_t last_mid_n; /* bytes after "claude:", or NULL */
    long long last_total;
    /* the feed */
    PyObject *items;
    PyObject *run, *run_session, *order, *responses, *calls, *results, *call_at; /* owned */
    Py_ssize_t index;
    PyObject *pending_responses, *pending_run, *pending_run_session; /* owned */
    Line pending;
    PyObject *pending_session; /* owned */
    HashList call_hashes, result_hashes;
    /* last session seen */
    const char *last_sid_p; Py_ssize_t last_sid_n;
    PyObject *session; /* owned */
    PyObject *model_cache; const char *model_p; Py_ssize_t model_n; /* owned */
} Ctx;

static PyObject *str_of(const Str *s) {
    if (!s->set) return PyUnicode_FromStringAndSize("", 0);
    return PyUnicode_DecodeUTF8(s->p, s->n, NULL);
}

static PyObject *model_of(Ctx *c, const Str *s) {
    if (!s->set) return PyUnicode_FromStringAndSize("", 0);
    if (c->model_cache && c->model_n == s->n && memcmp(c->model_p, s->p, (size_t)s->n) == 0) {
        Py_INCREF(c->model_cache);
        return c->model_cache;
    }
    PyObject *m = PyUnicode_DecodeUTF8(s->p, s->n, NULL);
    if (m == NULL) return NULL;
    Py_XSETREF(c->model_cache, Py_NewRef(m));
    c->model_p = s->p;
    c->model_n = s->n;
    return m;
}

static int open_run(Ctx *c, PyObject *session) {
    PyObject *run = PyObject_CallOneArg(c->run_type, session);
    if (run == NULL) return -1;
    if (PyList_Append(c->items, run) < 0) { Py_DECREF(run); return -1; }
    Py_XSETREF(c->run, run);
    Py_XSETREF(c->run_session, Py_NewRef(session));
    Py_XSETREF(c->order, PyObject_GetAttrString(run, "order"));
    Py_XSETREF(c->responses, PyObject_GetAttrString(run, "responses"));
    Py_XSETREF(c->calls, PyObject_GetAttrString(run, "calls"));
    Py_XSETREF(c->results, PyObject_GetAttrString(run, "results"));
    Py_XSETREF(c->call_at, PyDict_New());
    if (!c->order || !c->responses || !c->calls || !c->results || !c->call_at) return -1;
    if (!PyByteArray_Check(c->order) || !PyList_Check(c->responses) || !PyList_Check(c->calls) ||
        !PyList_Check(c->results)) {
        PyErr_SetString(PyExc_TypeError, "EventRun fields of unexpected types");
        return -1;
    }
    return 0;
}

static int run_for(Ctx *c, PyObject *session) {
    if (c->run == NULL || c->run_session != session) return open_run(c, session);
    return 0;
}

static int order_add(Ctx *c, char code) {
    Py_ssize_t n = PyByteArray_GET_SIZE(c->order);
    if (PyByteArray_Resize(c->order, n + 1) < 0) return -1;
    PyByteArray_AS_STRING(c->order)[n] = code;
    return 0;
}

static int flush(Ctx *c) {
    if (c->index < 0) return 0;
    Line *L = &c->pending;
    long long w5 = L->has_split ? L->e5 : L->cc, w1 = L->has_split ? L->e1 : 0;
    PyObject *cost;
    if (L->has_cost) cost = PyFloat_FromDouble(L->cost);
    else cost = Py_NewRef(Py_None);
    PyObject *t = Py_BuildValue(
        "(OdNLLLLLNNNONO)", c->last_key, L->has_ts ? L->ts : 0.0, model_of(c, &L->model), L->in,
        L->out, L->cr, w5, w1, cost, str_of(&L->cwd), str_of(&L->branch),
        (L->sidechain == 1 || c->from_path) ? Py_True : Py_False, str_of(&L->req), c->pending_session);
    if (t == NULL) return -1;
    if (PyList_SetItem(c->pending_responses, c->index, t) < 0) return -1;
    c->index = -1;
    return 0;
}

static int pend(Ctx *c, const Line *L, PyObject *session) {
    if (run_for(c, session) < 0) return -1;
    Py_XSETREF(c->pending_run, Py_NewRef(c->run));
    Py_XSETREF(c->pending_run_session, Py_NewRef(c->run_session));
    Py_XSETREF(c->pending_responses, Py_NewRef(c->responses));
    if (order_add(c, 'u') < 0) return -1;
    c->index = PyList_GET_SIZE(c->responses);
    if (PyList_Append(c->responses, Py_None) < 0) return -1;
    c->pending = *L;
    Py_XSETREF(c->pending_session, Py_NewRef(session));
    return 0;
}

static int replace(Ctx *c, const Line *L, PyObject *session) {
    if (c->index < 0) return pend(c, L, session);
    if (session != c->pending_run_session &&
        PyObject_SetAttrString(c->pending_run, "mixed", Py_True) < 0)
        return -1;
    c->pending = *L;
    Py_XSETREF(c->pending_session, Py_NewRef(session));
    return 0;
}

static int set_session(Ctx *c, const char *p, Py_ssize_t n) {
    if (c->session && c->last_sid_n == n && memcmp(c->last_sid_p, p, (size_t)n) == 0) return 0;
    PyObject *sid = PyUnicode_DecodeUTF8(p, n, NULL);
    if (sid == NULL) return -1;
    PyObject *key = PyObject_CallOneArg(c->session_key, sid);
    Py_DECREF(sid);
    if (key == NULL) return -1;
    Py_XSETREF(c->session, key);
    c->last_sid_p = p;
    c->last_sid_n = n;
    return 0;
}

static int announce(Ctx *c, const Line *L) {
    c->announced = 1;
    if (!c->from_path) {
        PyObject *sid = str_of(&L->sid);
        if (sid == NULL) return -1;
        Py_XSETREF(c->session_id, sid);
        c->sid_p = L->sid.p;
        c->sid_n = L->sid.n;
    }
    PyObject *model;
    if (L->has_message && L->model.set && !str_is(&L->model, "<synthetic>", 11))
        model = PyUnicode_DecodeUTF8(L->model.p, L->model.n, NULL);
    else
        model = PyUnicode_FromStringAndSize("", 0);
    PyObject *key = PyObject_CallOneArg(c->session_key, c->session_id);
    PyObject *info = NULL;
    if (model && key)
        info = PyObject_CallFunction(c->info_type, "OdNNO", key, L->has_ts ? L->ts : 0.0,
                                     str_of(&L->cwd), str_of(&L->branch), model);
    Py_XDECREF(model);
    Py_XDECREF(key);
    if (info == NULL) return -1;
    int rc = PyList_Append(c->items, info);
    Py_DECREF(info);
    Py_CLEAR(c->run); /* what follows comes after it */
    Py_CLEAR(c->run_session);
    return rc;
}

/* Append a call's (result's) tuple `t` (stolen; NULL: an error) to `list`, and note its
 * raw input (output) for hash_tail; a block without one hashes as msgspec's default, null.
 * 1: done; -1: error. */
static int append_hashed(Ctx *c, PyObject *list, PyObject *t, HashList *hashes, const char *raw,
                         const char *raw_end) {
    if (t == NULL) return -1;
    Py_ssize_t at = PyList_GET_SIZE(list);
    int rc = PyList_Append(list, t);
    Py_DECREF(t);
    if (rc < 0) return -1;
    if (raw == NULL) { raw = NULL_RAW; raw_end = NULL_RAW + 4; }
    return hash_add(hashes, list, at, c->run_session, raw, raw_end) < 0 ? -1 : 1;
}

/* 1: done; 0: give up (the Python path decides); -1: error. */
static int tool_call(Ctx *c, const Line *L, const Block *B, PyObject *session) {
    if (B->id.n == 0) return 0; /* a local key: the Python path builds it */
    if (run_for(c, session) < 0 || order_add(c, 'c') < 0) return -1;
    PyObject *call_id = PyUnicode_DecodeUTF8(B->id.p, B->id.n, NULL);
    PyObject *name = str_of(&B->name);
    if (call_id == NULL || name == NULL) { Py_XDECREF(call_id); Py_XDECREF(name); return -1; }
    PyObject *index = PyLong_FromSsize_t(PyList_GET_SIZE(c->calls));
    int changing = PySet_Contains(c->changing, name);
    PyObject *t = NULL;
    if (index && changing >= 0 && PyDict_SetItem(c->call_at, call_id, index) == 0)
        t = Py_BuildValue("(OdOsOn)", call_id, L->has_ts ? L->ts : 0.0, name, "",
                          changing ? Py_True : Py_False, PyList_GET_SIZE(c->responses));
    Py_XDECREF(index);
    Py_DECREF(call_id);
    Py_DECREF(name);
    return append_hashed(c, c->calls, t, &c->call_hashes, B->input, B->input_end);
}

static int tool_result(Ctx *c, const Line *L, const Block *B, PyObject *session) {
    if (B->tool_use_id.n == 0) return 0;
    if (run_for(c, session) < 0 || order_add(c, 'r') < 0) return -1;
    PyObject *call_id = PyUnicode_DecodeUTF8(B->tool_use_id.p, B->tool_use_id.n, NULL);
    if (call_id == NULL) return -1;
    Py_ssize_t paired = -1;
    PyObject *found = PyDict_GetItemWithError(c->call_at, call_id);
    if (found) {
        paired = PyLong_AsSsize_t(found);
        if (PyDict_DelItem(c->call_at, call_id) < 0) { Py_DECREF(call_id); return -1; }
    } else if (PyErr_Occurred()) {
        Py_DECREF(call_id);
        return -1;
    }
    PyObject *t = Py_BuildValue("(OdOsnn)", call_id, L->has_ts ? L->ts : 0.0,
                                B->is_error == 1 ? Py_True : Py_False, "", paired,
                                PyList_GET_SIZE(c->calls));
    Py_DECREF(call_id);
    return append_hashed(c, c->results, t, &c->result_hashes, B->content, B->content_end);
}

/* The input (output) hashes of each session's latest `hashed_per_session` calls (results),
 * as parser.hash_tail: field 3 of their tuples. */
static int hash_tail(Ctx *c, HashList *h, PyObject *digest) {
    PyObject *left = PyDict_New();
    if (left == NULL) return -1;
    for (Py_ssize_t i = h->len - 1; i >= 0; i--) {
        ToHash *e = &h->items[i];
        PyObject *n = PyDict_GetItemWithError(left, e->session);
        Py_ssize_t remaining = n ? PyLong_AsSsize_t(n) : c->hashed_per_session;
        if (n == NULL && PyErr_Occurred()) goto fail;
        if (remaining <= 0) continue;
        PyObject *r = PyLong_FromSsize_t(remaining - 1);
        if (r == NULL || PyDict_SetItem(left, e->session, r) < 0) { Py_XDECREF(r); goto fail; }
        Py_DECREF(r);
        PyObject *raw = PyBytes_FromStringAndSize(e->raw, e->raw_end - e->raw);
        if (raw == NULL) goto fail;
        PyObject *hash = PyObject_CallOneArg(digest, raw);
        Py_DECREF(raw);
        if (hash == NULL) goto fail;
        PyObject *old = PyList_GET_ITEM(e->list, e->at);
        PyObject *t = PyTuple_New(6);
        if (t == NULL) { Py_DECREF(hash); goto fail; }
        for (Py_ssize_t k = 0; k < 6; k++)
            PyTuple_SET_ITEM(t, k, k == 3 ? hash : Py_NewRef(PyTuple_GET_ITEM(old, k)));
        if (PyList_SetItem(e->list, e->at, t) < 0) goto fail;
    }
    Py_DECREF(left);
    return 0;
fail:
    Py_DECREF(left);
    return -1;
}

/* "claude:" + the message id, as the Python path keys a response. */
static PyObject *dedupe_key(const char *mid, Py_ssize_t n) {
    char small[256];
    char *buf = n + 7 <= (Py_ssize_t)sizeof(small) ? small : (char *)PyMem_Malloc((size_t)n + 7);
    if (buf == NULL) return PyErr_NoMemory();
    memcpy(buf, "claude:", 7);
    memcpy(buf + 7, mid, (size_t)n);
    PyObject *key = PyUnicode_DecodeUTF8(buf, n + 7, NULL);
    if (buf != small) PyMem_Free(buf);
    return key;
}

/* 1: the line was applied; 0: give up; -1: error. */
static int apply(Ctx *c, const Line *L, const Blocks *blocks) {
    if (!c->announced && L->sid.set && L->sid.n > 0 && announce(c, L) < 0) return -1;
    if (!L->has_message) return 1;
    int own = !c->from_path && L->sid.set && L->sid.n > 0;
    if (set_session(c, own ? L->sid.p : c->sid_p, own ? L->sid.n : c->sid_n) < 0) return -1;
    PyObject *session = c->session;
    int assistant = !L->type.set || L->type.n == 0 || str_is(&L->type, "assistant", 9);
    if (assistant) {
        if (L->has_usage && !str_is(&L->model, "<synthetic>", 11)) {
            long long total = L->in + L->out + L->cr + (L->has_split ? L->e5 + L->e1 : L->cc);
            if (total) {
                if (!L->mid.set || L->mid.n == 0) return 0;
                if (c->last_mid == NULL || c->last_mid_n != L->mid.n ||
                    memcmp(c->last_mid, L->mid.p, (size_t)L->mid.n) != 0) {
                    if (flush(c) < 0) return -1;
                    PyObject *key = dedupe_key(L->mid.p, L->mid.n);
                    if (key == NULL) return -1;
                    Py_XSETREF(c->last_key, key);
                    c->last_mid = L->mid.p;
                    c->last_mid_n = L->mid.n;
                    c->last_total = total;
                    if (pend(c, L, session) < 0) return -1;
                } else if (total > c->last_total) {
                    c->last_total = total;
                    if (replace(c, L, session) < 0) return -1;
                }
            }
        }
        if (L->content_kind == 2) {
            for (Py_ssize_t i = 0; i < L->block_count; i++) {
                const Block *B = &blocks->items[L->block_first + i];
                if (str_is(&B->type, "tool_use", 8)) {
                    int rc = tool_call(c, L, B, session);
                    if (rc <= 0) return rc;
                }
            }
        }
    } else if (str_is(&L->type, "user", 4) && L->content_kind == 2) {
        for (Py_ssize_t i = 0; i < L->block_count; i++) {
            const Block *B = &blocks->items[L->block_first + i];
            if (str_is(&B->type, "tool_result", 11)) {
                int rc = tool_result(c, L, B, session);
                if (rc <= 0) return rc;
            }
        }
    }
    return 1;
}

static void ctx_clear(Ctx *c) {
    Py_CLEAR(c->session_id);
    Py_CLEAR(c->last_key);
    Py_CLEAR(c->items);
    Py_CLEAR(c->run);
    Py_CLEAR(c->run_session);
    Py_CLEAR(c->order);
    Py_CLEAR(c->responses);
    Py_CLEAR(c->calls);
    Py_CLEAR(c->results);
    Py_CLEAR(c->call_at);
    Py_CLEAR(c->pending_responses);
    Py_CLEAR(c->pending_run);
    Py_CLEAR(c->pending_run_session);
    Py_CLEAR(c->pending_session);
    Py_CLEAR(c->session);
    Py_CLEAR(c->model_cache);
    PyMem_Free(c->call_hashes.items);
    PyMem_Free(c->result_hashes.items);
}

/* The decode_whole precondition: whole lines, each one `{...}` and at most MAX_LINE_BYTES. */
static int plain_lines(const char *data, Py_ssize_t n, Py_ssize_t *lines) {
    const char *p = data, *end = data + n;
    Py_ssize_t count_ = 0;
    if (n == 0 || data[n - 1] != '\n') return 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL || nl == p || *p != '{' || nl[-1] != '}' || nl - p > MAX_LINE_BYTES) return 0;
        count_++;
        p = nl + 1;
    }
    *lines = count_;
    return 1;
}

PyDoc_STRVAR(items_doc,
"items(data, state, session_key, run_type, info_type, changing, short_hash, output_hash,\n"
"      hashed_per_session)\n"
"--\n\n"
"The runs of a buffer of whole transcript lines, as ClaudeFileParser._items gives them,\n"
"or None when the Python path must decide. state is (session_id, session_from_path,\n"
"announced, last_key, last_total); the result is (items, lines, session_id, announced,\n"
"last_key, last_total).");

static PyObject *items(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *state, *session_key, *run_type, *info_type, *changing, *short_hash, *output_hash;
    Py_ssize_t hashed;
    if (!PyArg_ParseTuple(args, "y*O!OOOOOOn", &buf, &PyTuple_Type, &state, &session_key,
                          &run_type, &info_type, &changing, &short_hash, &output_hash, &hashed))
        return NULL;
    PyObject *result = NULL;
    Ctx c;
    Arena arena = {0};
    Blocks blocks = {0};
    memset(&c, 0, sizeof(c));
    c.index = -1;
    const char *data = (const char *)buf.buf;
    Py_ssize_t n = buf.len, lines = 0;
    PyObject *sid, *last_key, *last_total;
    int from_path, announced;
    if (!PyArg_ParseTuple(state, "UppUO!", &sid, &from_path, &announced, &last_key, &PyLong_Type,
                          &last_total))
        goto done;
    if (!plain_lines(data, n, &lines)) { result = Py_NewRef(Py_None); goto done; }
    c.session_key = session_key; c.run_type = run_type; c.info_type = info_type;
    c.changing = changing; c.short_hash = short_hash; c.output_hash = output_hash;
    c.hashed_per_session = hashed;
    c.from_path = from_path;
    c.announced = announced;
    c.session_id = Py_NewRef(sid);
    c.sid_p = PyUnicode_AsUTF8AndSize(sid, &c.sid_n);
    c.last_key = Py_NewRef(last_key);
    const char *lk = PyUnicode_AsUTF8AndSize(last_key, &c.last_mid_n);
    if (c.sid_p == NULL || lk == NULL) { PyErr_Clear(); result = Py_NewRef(Py_None); goto done; }
    if (c.last_mid_n >= 7 && memcmp(lk, "claude:", 7) == 0) { c.last_mid = lk + 7; c.last_mid_n -= 7; }
    else c.last_mid = NULL;
    int overflow = 0;
    c.last_total = PyLong_AsLongLongAndOverflow(last_total, &overflow);
    if (overflow || (c.last_total == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        result = Py_NewRef(Py_None);
        goto done;
    }
    c.items = PyList_New(0);
    if (c.items == NULL) goto done;
    const char *p = data, *end = data + n;
    Line L;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        blocks.len = 0;
        const char *q = read_line(p, nl, &L, &blocks, &arena);
        if (q != nl) {
            if (PyErr_Occurred()) goto done;
            result = Py_NewRef(Py_None);
            goto done;
        }
        int rc = apply(&c, &L, &blocks);
        if (rc < 0) goto done;
        if (rc == 0) { result = Py_NewRef(Py_None); goto done; }
        p = nl + 1;
    }
    if (flush(&c) < 0) goto done;
    if (hash_tail(&c, &c.call_hashes, c.short_hash) < 0) goto done;
    if (hash_tail(&c, &c.result_hashes, c.output_hash) < 0) goto done;
    result = Py_BuildValue("(OnOOOL)", c.items, lines, c.session_id, c.announced ? Py_True : Py_False,
                           c.last_key, c.last_total);
done:
    ctx_clear(&c);
    arena_free(&arena);
    PyMem_Free(blocks.items);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"items", items, METH_VARARGS, items_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_claude_native",
    "The Claude Code parser's hot path in C (see claude_parser.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__claude_native(void) { return PyModule_Create(&module); }
