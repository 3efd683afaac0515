/* tokpack.formats._ctxcoder: the CTX coder's per-symbol loop (docs/FORMAT.md "CTX coder",
 * coders 3 and 4), compiled, giving exactly the bytes tokpack/formats/ctx.py gives with
 * constriction, which stays the reference and the fallback where this module is not built.
 *
 * The range coder is constriction 0.5's queue RangeEncoder/RangeDecoder with 64-bit state,
 * 32-bit words and 24-bit probabilities (constriction/src/stream/queue.rs), including its
 * carry handling ("inverted" words held back), its seal, its zero words past the end of the
 * data and its `maybe_exhausted` test. A model gives symbol x exactly f[x] + 1 units of 2^24.
 *
 * The models: at a block's start, f0 = Q(strength * order0 + c * 2^16, 2^24 - m), computed
 * for the whole table once. With a neighbour model, a symbol whose previous token is p is
 * coded with f = Q(w, 2^24 - m), w = (256 - mix) * f0 plus mix * g[j] at p's j-th neighbour:
 * every other code's f is base[x] * free / total, the same for the whole block (`fb`), so a
 * symbol changes only its M neighbours and the code that takes the remainder, and costs
 * O(M + log m), not O(m). The remainder's code is the first largest f: it can only be a
 * neighbour or the block's first largest fb (a neighbour's f is never below its fb).
 *
 * All integers are below 2^63 for every table a valid prior and chunk allow (FORMAT.md). No
 * Python object is touched while coding; the GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION 24
#define ONE ((int64_t)1 << PRECISION)
#define PRIOR_ONE ((int64_t)1 << 16)
#define MIX_ONE 256
#define BLOCK 16
#define MAX_NEIGHBOURS 64
#define WORD_BITS 32
#define LOW_RANGE ((uint64_t)1 << (64 - WORD_BITS)) /* range below this: a word goes out */

enum { OK = 0, INVALID = 1, NOT_EXHAUSTED = 2, NO_MEMORY = 3, BAD_TABLE = 4 };

/* ---- the range coder ---- */

typedef struct {
    uint64_t lower, range;
    int64_t inverted;      /* words held back (constriction's Inverted situation) */
    uint32_t first;        /* the first held-back word */
    uint32_t *out;
    Py_ssize_t n_out;
} Encoder;

static void put(Encoder *e, uint32_t word) { e->out[e->n_out++] = word; }

static void encode_symbol(Encoder *e, int64_t cum, int64_t prob) {
    uint64_t scale = e->range >> PRECISION;
    uint64_t new_lower = e->lower + scale * (uint64_t)cum;
    e->range = scale * (uint64_t)prob;
    if (e->inverted && new_lower + e->range > new_lower) {
        /* the held-back words are settled: with a carry, first + 1 and zeros */
        int carry = new_lower < e->lower;
        put(e, carry ? e->first + 1 : e->first);
        for (int64_t i = 1; i < e->inverted; i++)
            put(e, carry ? 0 : 0xFFFFFFFFu);
        e->inverted = 0;
    }
    e->lower = new_lower;
    if (e->range < LOW_RANGE) {
        e->range <<= WORD_BITS;
        uint32_t word = (uint32_t)(e->lower >> (64 - WORD_BITS));
        e->lower <<= WORD_BITS;
        if (e->inverted)
            e->inverted++;
        else if (e->lower + e->range > e->lower)
            put(e, word);
        else {
            e->inverted = 1;
            e->first = word;
        }
    }
}

static void seal(Encoder *e) {
    if (e->range == UINT64_MAX)
        return; /* nothing coded: no words */
    uint64_t point = e->lower + (LOW_RANGE - 1);
    if (e->inverted) {
        int carry = point < e->lower;
        put(e, carry ? e->first + 1 : e->first);
        for (int64_t i = 1; i < e->inverted; i++)
            put(e, carry ? 0 : 0xFFFFFFFFu);
    }
    uint32_t point_word = (uint32_t)(point >> (64 - WORD_BITS));
    put(e, point_word);
    if ((uint32_t)((e->lower + e->range) >> (64 - WORD_BITS)) == point_word)
        put(e, 0);
}

typedef struct {
    uint64_t lower, range, point;
    const uint32_t *words;
    Py_ssize_t n_words, pos;
} Decoder;

static void decoder_init(Decoder *d, const uint32_t *words, Py_ssize_t n_words) {
    d->words = words;
    d->n_words = n_words;
    d->pos = 0;
    d->lower = 0;
    d->range = UINT64_MAX;
    d->point = 0;
    int n_read = 0;
    while (n_read < 2 && d->pos < n_words) {
        d->point = (d->point << WORD_BITS) | words[d->pos++];
        n_read++;
    }
    if (n_read == 1)
        d->point <<= WORD_BITS;
}

/* the quantile of the next symbol, or -1 where the data cannot have come from an encoder */
static int64_t decoder_quantile(const Decoder *d, uint64_t *scale) {
    *scale = d->range >> PRECISION;
    uint64_t quantile = (d->point - d->lower) / *scale;
    return quantile >= (uint64_t)ONE ? -1 : (int64_t)quantile;
}

static void decoder_take(Decoder *d, uint64_t scale, int64_t cum, int64_t prob) {
    d->lower += scale * (uint64_t)cum;
    d->range = scale * (uint64_t)prob;
    if (d->range < LOW_RANGE) {
        d->lower <<= WORD_BITS;
        d->range <<= WORD_BITS;
        d->point <<= WORD_BITS;
        if (d->pos < d->n_words)
            d->point |= d->words[d->pos++];
    }
}

static int decoder_exhausted(const Decoder *d) {
    return d->pos >= d->n_words &&
           (d->range == UINT64_MAX || d->point - d->lower < ((LOW_RANGE << 1) - 1));
}

/* ---- the models ---- */

typedef struct {
    const int64_t *order0;     /* [m] */
    int64_t strength;
    const int64_t *neighbours; /* [m, M], or NULL */
    const int64_t *ranks;      /* [M] */
    int64_t rank_strength, mix;
    int n_neighbours;          /* M */
} Book;

typedef struct {
    int m;
    int64_t free;              /* 2^24 - m */
    int64_t *f0, *cum0;        /* [m], [m + 1]: cum0[x] = sum of f0[y] + 1 for y < x */
    /* with a neighbour model: */
    int64_t *fb, *cumb;        /* fb[x] = (256 - mix) * f0[x] * free / total */
    int64_t fb_sum, total, first_max; /* first_max: the first x of largest fb */
    int64_t extra[MAX_NEIGHBOURS];   /* mix * g[j] */
    /* one symbol's changed codes, sorted by code: where, and by how much f exceeds fb */
    int n_changed;
    int64_t changed[MAX_NEIGHBOURS + 1], delta[MAX_NEIGHBOURS + 1];
} Model;

/* Q(w, total) into out: w[x] * total / sum(w), the remainder to the first largest.
 * Returns 0 where the weights are all zero (no valid prior gives that). */
static int quantize(const int64_t *w, int n, int64_t total, int64_t *out) {
    int64_t sum = 0;
    for (int x = 0; x < n; x++)
        sum += w[x];
    if (sum <= 0)
        return 0;
    int64_t given = 0, best = -1;
    int arg = 0;
    for (int x = 0; x < n; x++) {
        out[x] = w[x] * total / sum;
        given += out[x];
        if (out[x] > best) {
            best = out[x];
            arg = x;
        }
    }
    out[arg] += total - given;
    return 1;
}

static void prefix(const int64_t *f, int m, int64_t *cum) {
    cum[0] = 0;
    for (int x = 0; x < m; x++)
        cum[x + 1] = cum[x] + f[x] + 1;
}

/* the block's tables from the row's state; `scratch` holds m int64 */
static int block_model(Model *md, const Book *b, const int64_t *counts, const int64_t *rank_counts,
                       int64_t *scratch) {
    int m = md->m;
    for (int x = 0; x < m; x++)
        scratch[x] = b->strength * b->order0[x] + counts[x] * PRIOR_ONE;
    if (!quantize(scratch, m, md->free, md->f0))
        return 0;
    prefix(md->f0, m, md->cum0);
    if (!b->neighbours)
        return 1;
    int n = b->n_neighbours;
    int64_t w[MAX_NEIGHBOURS], g[MAX_NEIGHBOURS];
    for (int j = 0; j < n; j++)
        w[j] = b->rank_strength * b->ranks[j] + rank_counts[j] * PRIOR_ONE;
    if (!quantize(w, n, ONE, g))
        return 0;
    int64_t extra_sum = 0;
    for (int j = 0; j < n; j++) {
        md->extra[j] = b->mix * g[j];
        extra_sum += md->extra[j];
    }
    int64_t keep = MIX_ONE - b->mix;
    md->total = keep * md->free + extra_sum; /* the f0 sum to free */
    md->fb_sum = 0;
    md->first_max = 0;
    for (int x = 0; x < m; x++) {
        md->fb[x] = keep * md->f0[x] * md->free / md->total;
        md->fb_sum += md->fb[x];
        if (md->fb[x] > md->fb[md->first_max])
            md->first_max = x;
    }
    prefix(md->fb, m, md->cumb);
    return 1;
}

/* records that code x's f is fb[x] + delta, keeping md->changed sorted by code (M is small) */
static void change(Model *md, int64_t x, int64_t delta) {
    int i = md->n_changed++;
    while (i > 0 && md->changed[i - 1] > x) {
        md->changed[i] = md->changed[i - 1];
        md->delta[i] = md->delta[i - 1];
        i--;
    }
    md->changed[i] = x;
    md->delta[i] = delta;
}

/* the changes of the symbol after token p (neighbour model): md->changed / delta */
static void symbol_model(Model *md, const Book *b, int64_t p) {
    int n = b->n_neighbours;
    const int64_t *nb = b->neighbours + p * n;
    int64_t keep = MIX_ONE - b->mix;
    int64_t sum = md->fb_sum, best = -1, arg = -1;
    int first_max_is_neighbour = 0;
    md->n_changed = 0;
    for (int j = 0; j < n; j++) {
        int64_t x = nb[j];
        int64_t f = (keep * md->f0[x] + md->extra[j]) * md->free / md->total;
        sum += f - md->fb[x];
        change(md, x, f - md->fb[x]);
        if (f > best || (f == best && x < arg)) {
            best = f;
            arg = x;
        }
        if (x == md->first_max)
            first_max_is_neighbour = 1;
    }
    int64_t fm = md->first_max;
    if (!first_max_is_neighbour && (md->fb[fm] > best || (md->fb[fm] == best && fm < arg))) {
        arg = fm;
        change(md, fm, 0);
    }
    for (int i = 0; i < md->n_changed; i++)
        if (md->changed[i] == arg)
            md->delta[i] += md->free - sum;
}

/* cumulative and probability of x under the symbol's model */
static void symbol_interval(const Model *md, int64_t x, int64_t *cum, int64_t *prob) {
    int64_t c = md->cumb[x], f = md->fb[x];
    for (int i = 0; i < md->n_changed; i++) {
        if (md->changed[i] < x)
            c += md->delta[i];
        else if (md->changed[i] == x)
            f += md->delta[i];
    }
    *cum = c;
    *prob = f + 1;
}

/* the last x in [lo, hi] with cum[x] + offset <= q (cum[lo] + offset <= q holds) */
static int64_t search(const int64_t *cum, int64_t lo, int64_t hi, int64_t offset, int64_t q) {
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (cum[mid] + offset <= q)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* the symbol of quantile q under the symbol's model: the segments between changed codes
 * keep a running offset, so the found code's interval comes with it (no second pass) */
static int64_t symbol_find(const Model *md, int64_t q, int64_t *cum, int64_t *prob) {
    int64_t lo = 0, offset = 0;
    for (int i = 0; i < md->n_changed; i++) {
        int64_t x = md->changed[i];
        /* codes lo..x keep `offset`; the interval after x ends at cumb[x + 1] + offset + delta */
        if (q < md->cumb[x + 1] + offset + md->delta[i]) {
            int64_t found = search(md->cumb, lo, x, offset, q);
            *cum = md->cumb[found] + offset;
            *prob = md->fb[found] + 1 + (found == x ? md->delta[i] : 0);
            return found;
        }
        offset += md->delta[i];
        lo = x + 1;
    }
    int64_t found = search(md->cumb, lo, md->m - 1, offset, q);
    *cum = md->cumb[found] + offset;
    *prob = md->fb[found] + 1;
    return found;
}

/* ---- a chunk: rows one after another, blocks of BLOCK frames ---- */

typedef struct {
    int m, n_books, n_rows, n_frames, max_neighbours;
    long long halve_above;     /* CTX_HALVE_ABOVE (coder 4), or -1: no halving (coder 3) */
    Book *books;
    const int64_t *row_book;   /* [R] */
    int64_t *counts;           /* [R, m] */
    int64_t *rank_counts;      /* [R, max(max_neighbours, 1)] */
    int64_t *prev, *mass;      /* [R] */
} Chunk;

static void update(const Chunk *ch, const Book *b, int r, const int64_t *block, int n) {
    int64_t *counts = ch->counts + (int64_t)r * ch->m;
    int width = ch->max_neighbours > 0 ? ch->max_neighbours : 1;
    int64_t *rank_counts = ch->rank_counts + (int64_t)r * width;
    int64_t p = ch->prev[r];
    for (int t = 0; t < n; t++) {
        int64_t x = block[t];
        counts[x]++;
        if (b->neighbours && p >= 0) {
            const int64_t *nb = b->neighbours + p * b->n_neighbours;
            for (int j = 0; j < b->n_neighbours; j++)
                if (nb[j] == x) {
                    rank_counts[j]++;
                    break;
                }
        }
        p = x;
    }
    ch->prev[r] = p;
    ch->mass[r] += n;
    if (ch->halve_above >= 0 && ch->mass[r] > ch->halve_above) {
        for (int x = 0; x < ch->m; x++)
            counts[x] -= counts[x] >> 1;
        for (int j = 0; j < b->n_neighbours; j++)
            rank_counts[j] -= rank_counts[j] >> 1;
        ch->mass[r] -= ch->mass[r] >> 1;
    }
}

static int model_alloc(Model *md, int m) {
    md->m = m;
    md->free = ONE - m;
    md->f0 = malloc(sizeof(int64_t) * (size_t)m);
    md->cum0 = malloc(sizeof(int64_t) * ((size_t)m + 1));
    md->fb = malloc(sizeof(int64_t) * (size_t)m);
    md->cumb = malloc(sizeof(int64_t) * ((size_t)m + 1));
    return md->f0 && md->cum0 && md->fb && md->cumb;
}

static void model_free(Model *md) {
    free(md->f0);
    free(md->cum0);
    free(md->fb);
    free(md->cumb);
}

/* encode (tokens in) or decode (tokens out); the rows' state is updated in place */
static int code_chunk(Chunk *ch, int64_t *tokens, Encoder *e, Decoder *d) {
    Model md;
    int64_t *scratch = malloc(sizeof(int64_t) * (size_t)ch->m);
    int status = OK;
    if (!model_alloc(&md, ch->m) || !scratch) {
        status = NO_MEMORY;
        goto done;
    }
    int width = ch->max_neighbours > 0 ? ch->max_neighbours : 1;
    for (int r = 0; r < ch->n_rows && status == OK; r++) {
        const Book *b = &ch->books[ch->row_book[r]];
        int64_t *row = tokens + (int64_t)r * ch->n_frames;
        for (int start = 0; start < ch->n_frames; start += BLOCK) {
            int n = ch->n_frames - start < BLOCK ? ch->n_frames - start : BLOCK;
            if (!block_model(&md, b, ch->counts + (int64_t)r * ch->m,
                             ch->rank_counts + (int64_t)r * width, scratch)) {
                status = BAD_TABLE;
                break;
            }
            int64_t p = ch->prev[r];
            for (int t = start; t < start + n; t++) {
                int64_t cum, prob;
                int mixed = b->neighbours && p >= 0;
                if (mixed)
                    symbol_model(&md, b, p);
                if (e) {
                    int64_t x = row[t];
                    if (mixed)
                        symbol_interval(&md, x, &cum, &prob);
                    else {
                        cum = md.cum0[x];
                        prob = md.f0[x] + 1;
                    }
                    encode_symbol(e, cum, prob);
                } else {
                    uint64_t scale;
                    int64_t q = decoder_quantile(d, &scale);
                    if (q < 0) {
                        status = INVALID;
                        break;
                    }
                    if (mixed)
                        row[t] = symbol_find(&md, q, &cum, &prob);
                    else {
                        row[t] = search(md.cum0, 0, ch->m - 1, 0, q);
                        cum = md.cum0[row[t]];
                        prob = md.f0[row[t]] + 1;
                    }
                    decoder_take(d, scale, cum, prob);
                }
                p = row[t];
            }
            if (status != OK)
                break;
            update(ch, b, r, row + start, n);
        }
    }
done:
    model_free(&md);
    free(scratch);
    return status;
}

/* ---- Python ---- */

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t n, int writable, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                                          (writable ? PyBUF_WRITABLE : 0)) < 0)
        return 0;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    if (view->itemsize != 8 || (strcmp(f, "q") && strcmp(f, "l")) || view->len != n * 8) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd C-contiguous int64 values", what, n);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

/* the buffers an encode or decode call holds, released by `release` */
typedef struct {
    Py_buffer views[16];
    int n_views;
    Py_buffer *book_views;
    int n_book_views;
} Held;

static void release(Held *h) {
    for (int i = 0; i < h->n_views; i++)
        PyBuffer_Release(&h->views[i]);
    for (int i = 0; i < h->n_book_views; i++)
        PyBuffer_Release(&h->book_views[i]);
    PyMem_Free(h->book_views);
    h->n_views = h->n_book_views = 0;
    h->book_views = NULL;
}

static int parse_chunk(Chunk *ch, Held *h, PyObject *books, PyObject *row_book, PyObject *counts,
                       PyObject *rank_counts, PyObject *prev, PyObject *mass) {
    if (ch->m < 1 || ch->m > 65536 || ch->n_rows < 0 || ch->n_frames < 0) {
        PyErr_SetString(PyExc_ValueError, "bad chunk shape");
        return 0;
    }
    if (!PyTuple_Check(books) || PyTuple_GET_SIZE(books) < 1) {
        PyErr_SetString(PyExc_TypeError, "books: a non-empty tuple");
        return 0;
    }
    ch->n_books = (int)PyTuple_GET_SIZE(books);
    ch->books = PyMem_Calloc((size_t)ch->n_books, sizeof(Book));
    h->book_views = PyMem_Calloc((size_t)ch->n_books * 3, sizeof(Py_buffer));
    if (!ch->books || !h->book_views) {
        PyErr_NoMemory();
        return 0;
    }
    ch->max_neighbours = 0;
    for (int k = 0; k < ch->n_books; k++) {
        PyObject *order0, *neighbours, *ranks;
        long long strength, rank_strength, mix;
        Book *b = &ch->books[k];
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(books, k), "OLOOLL:book", &order0, &strength,
                              &neighbours, &ranks, &rank_strength, &mix))
            return 0;
        if (!get_buffer(order0, &h->book_views[h->n_book_views], ch->m, 0, "order0"))
            return 0;
        b->order0 = h->book_views[h->n_book_views++].buf;
        b->strength = strength;
        if (neighbours != Py_None) {
            Py_ssize_t n = PyObject_Length(ranks);
            if (n < 1 || n > MAX_NEIGHBOURS || mix < 1 || mix > MIX_ONE) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "bad neighbour model");
                return 0;
            }
            b->n_neighbours = (int)n;
            if (!get_buffer(ranks, &h->book_views[h->n_book_views], n, 0, "ranks"))
                return 0;
            b->ranks = h->book_views[h->n_book_views++].buf;
            if (!get_buffer(neighbours, &h->book_views[h->n_book_views], n * ch->m, 0, "neighbours"))
                return 0;
            b->neighbours = h->book_views[h->n_book_views++].buf;
            for (Py_ssize_t i = 0; i < n * ch->m; i++)
                if (b->neighbours[i] < 0 || b->neighbours[i] >= ch->m) {
                    PyErr_SetString(PyExc_ValueError, "a neighbour is not a code");
                    return 0;
                }
            b->rank_strength = rank_strength;
            b->mix = mix;
            if (n > ch->max_neighbours)
                ch->max_neighbours = (int)n;
        }
    }
    int width = ch->max_neighbours > 0 ? ch->max_neighbours : 1;
    Py_ssize_t R = ch->n_rows;
    struct { PyObject *obj; Py_ssize_t n; int writable; const char *what; } args[] = {
        {row_book, R, 0, "row_book"}, {counts, R * ch->m, 1, "counts"},
        {rank_counts, R * width, 1, "rank_counts"}, {prev, R, 1, "prev"}, {mass, R, 1, "mass"},
    };
    for (int i = 0; i < 5; i++)
        if (!get_buffer(args[i].obj, &h->views[h->n_views], args[i].n, args[i].writable,
                        args[i].what))
            return 0;
        else
            h->n_views++;
    ch->row_book = h->views[0].buf;
    ch->counts = h->views[1].buf;
    ch->rank_counts = h->views[2].buf;
    ch->prev = h->views[3].buf;
    ch->mass = h->views[4].buf;
    for (Py_ssize_t r = 0; r < R; r++)
        if (ch->row_book[r] < 0 || ch->row_book[r] >= ch->n_books || ch->prev[r] < -1 ||
            ch->prev[r] >= ch->m) {
            PyErr_SetString(PyExc_ValueError, "bad row state");
            return 0;
        }
    return 1;
}

static PyObject *raise_status(int status) {
    if (status == NO_MEMORY)
        return PyErr_NoMemory();
    PyErr_SetString(PyExc_ValueError, status == BAD_TABLE ? "a model's weights are all zero"
                                                          : "the data is not a CTX range code");
    return NULL;
}

static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *tokens_obj, *books, *row_book, *counts, *rank_counts, *prev, *mass;
    Chunk ch = {0};
    Held h = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "OiiiOOOOOOL:encode", &tokens_obj, &ch.m, &ch.n_rows,
                          &ch.n_frames, &books, &row_book, &counts, &rank_counts, &prev, &mass,
                          &ch.halve_above))
        return NULL;
    if (!parse_chunk(&ch, &h, books, row_book, counts, rank_counts, prev, mass))
        goto done;
    Py_ssize_t n = (Py_ssize_t)ch.n_rows * ch.n_frames;
    if (!get_buffer(tokens_obj, &h.views[h.n_views], n, 0, "tokens"))
        goto done;
    int64_t *tokens = h.views[h.n_views++].buf;
    for (Py_ssize_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= ch.m) {
            PyErr_SetString(PyExc_ValueError, "a token is not a code");
            goto done;
        }
    /* at most one word per symbol (each keeps at least 2^-24 of a range of 2^32 or more),
     * plus the seal's two */
    Encoder e = {0, UINT64_MAX, 0, 0, PyMem_Malloc(sizeof(uint32_t) * ((size_t)n + 3)), 0};
    if (!e.out) {
        PyErr_NoMemory();
        goto done;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = code_chunk(&ch, tokens, &e, NULL);
    if (status == OK)
        seal(&e);
    Py_END_ALLOW_THREADS
    if (status != OK)
        raise_status(status);
    else {
        /* little-endian words */
        result = PyBytes_FromStringAndSize(NULL, e.n_out * 4);
        if (result) {
            unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
            for (Py_ssize_t i = 0; i < e.n_out; i++) {
                uint32_t w = e.out[i];
                o[4 * i] = (unsigned char)w;
                o[4 * i + 1] = (unsigned char)(w >> 8);
                o[4 * i + 2] = (unsigned char)(w >> 16);
                o[4 * i + 3] = (unsigned char)(w >> 24);
            }
        }
    }
    PyMem_Free(e.out);
done:
    release(&h);
    PyMem_Free(ch.books);
    return result;
}

static PyObject *py_decode(PyObject *self, PyObject *args) {
    PyObject *tokens_obj, *books, *row_book, *counts, *rank_counts, *prev, *mass;
    Py_buffer data;
    Chunk ch = {0};
    Held h = {0};
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*OiiiOOOOOOL:decode", &data, &tokens_obj, &ch.m, &ch.n_rows,
                          &ch.n_frames, &books, &row_book, &counts, &rank_counts, &prev, &mass,
                          &ch.halve_above))
        return NULL;
    uint32_t *words = NULL;
    if (!parse_chunk(&ch, &h, books, row_book, counts, rank_counts, prev, mass))
        goto done;
    if (data.len % 4) {
        PyErr_SetString(PyExc_ValueError, "data: not whole 32-bit words");
        goto done;
    }
    Py_ssize_t n = (Py_ssize_t)ch.n_rows * ch.n_frames, n_words = data.len / 4;
    if (!get_buffer(tokens_obj, &h.views[h.n_views], n, 1, "tokens"))
        goto done;
    int64_t *tokens = h.views[h.n_views++].buf;
    words = PyMem_Malloc(sizeof(uint32_t) * ((size_t)n_words + 1));
    if (!words) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *in = data.buf;
    for (Py_ssize_t i = 0; i < n_words; i++)
        words[i] = (uint32_t)in[4 * i] | (uint32_t)in[4 * i + 1] << 8 |
                   (uint32_t)in[4 * i + 2] << 16 | (uint32_t)in[4 * i + 3] << 24;
    Decoder d;
    int status;
    Py_BEGIN_ALLOW_THREADS
    decoder_init(&d, words, n_words);
    status = code_chunk(&ch, tokens, NULL, &d);
    if (status == OK && !decoder_exhausted(&d))
        status = NOT_EXHAUSTED;
    Py_END_ALLOW_THREADS
    if (status == OK || status == NOT_EXHAUSTED)
        result = PyBool_FromLong(status == OK);
    else
        raise_status(status);
done:
    PyMem_Free(words);
    release(&h);
    PyMem_Free(ch.books);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", py_encode, METH_VARARGS,
     "encode(tokens, m, n_rows, n_frames, books, row_book, counts, rank_counts, prev, mass, "
     "halve_above) -> bytes: CTX data of int64 tokens [n_rows, n_frames]; the state arrays are "
     "updated in place. books: per codebook (order0, strength, neighbours or None, ranks, "
     "rank_strength, mix); halve_above: -1 for no halving."},
    {"decode", py_decode, METH_VARARGS,
     "decode(data, tokens, m, n_rows, n_frames, books, row_book, counts, rank_counts, prev, "
     "mass, halve_above) -> bool: fills tokens; False where the data holds words the symbols do "
     "not use (constriction's maybe_exhausted); ValueError where it is no range code."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tokpack.formats._ctxcoder",
    "The CTX coder's symbol loop, compiled (docs/FORMAT.md \"CTX coder\").", -1, methods,
};

PyMODINIT_FUNC PyInit__ctxcoder(void) { return PyModule_Create(&module); }
