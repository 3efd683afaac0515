/* tokpack._kernels: fused float32 loops that torch would run as several passes over memory.
 *
 * EnCodec 48 kHz's SEANet follows almost every convolution with a group norm (one group:
 * the statistics of a whole segment) and then an ELU, and adds two normed branches in each
 * residual block. torch runs those as separate passes over the activations (group norm:
 * statistics, then apply; ELU; add), and its ELU computes expm1 at ~2 ns per element here.
 * `apply` does the norms, the sum and the ELU in one pass, writing where the next
 * convolution wants its input (inside its padding), so the pad's copy goes too.
 * `elu` is that ELU alone, for the layers without a norm (EnCodec 24 kHz, Mimi): torch's
 * AVX-512 expm1 took ~6 ns per element on an AMD EPYC with AVX-512 (its AVX2 one ~0.8).
 *
 * Buffers are float32, C-contiguous, laid out [T, C] (torch's channels-last [1, C, 1, T]);
 * sizes are checked. Work runs without the GIL on up to `threads` OpenMP threads, each a
 * contiguous range of the buffer. Import this module after torch: its libgomp.so.1 is then
 * torch's, already loaded, and both share one thread pool (a second pool's threads would
 * spin against torch's on the same cores). `apply` gives the same bits for any thread
 * count; `moments` adds its ranges' double sums in range order.
 *
 * Built with -ffp-contract=off: no fused multiply-add is formed, so every CPU computes the
 * same bits for the same inputs whichever instruction set the loop is compiled for.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* one copy of a loop per instruction set, chosen at load (GNU ifunc), where supported */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#define MAX_THREADS 64
#define MAX_TERMS 2
/* below this many elements a call runs on the calling thread alone */
#define MIN_PARALLEL 65536

/* expm1(x) for x <= 0 (and NaN), float32, branch-free so the loop vectorises.
 * x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2); expm1(x) = 2^n expm1(r) + (2^n - 1),
 * expm1(r) by its Taylor series to r^7 (truncation < 1.1e-8 relative). For n = 0 the result
 * is the series itself, so small |x| keeps its relative precision (unlike exp(x) - 1). */
static inline float expm1_nonpositive(float x) {
    x = x < -88.0f ? -88.0f : x;
    float nf = x * 1.44269504088896341f;
    nf = (nf + 12582912.0f) - 12582912.0f;  /* rounded to an integer (1.5 * 2^23 trick) */
    int32_t n = (int32_t)nf;
    float r = x - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    /* r + r^2 (1/2 + r/6 + r^2/24 + ... + r^5/5040), the bracket by Estrin's scheme: three
     * independent pairs, so the loop is not one long chain of dependent multiplies */
    float r2 = r * r;
    float a = 0.5f + r * (1.0f / 6.0f);
    float b = 1.0f / 24.0f + r * (1.0f / 120.0f);
    float c = 1.0f / 720.0f + r * (1.0f / 5040.0f);
    float p = r + r2 * (a + r2 * (b + r2 * c));
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return s * p + (s - 1.0f);
}

typedef struct {
    Py_ssize_t begin, end;
} Range;  /* the first member of every job: the part of the work it does */

/* out[i] = ELU(x[i]) for i < n (out may be x): what `apply` and `elu` compute */
static inline void elu_span(float *out, const float *x, Py_ssize_t n, float alpha) {
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        float e = alpha * expm1_nonpositive(v);
        out[i] = v > 0.0f ? v : e;
    }
}

typedef struct {
    Range range;               /* rows (time steps) */
    const float *x[MAX_TERMS];
    float *scale[MAX_TERMS];   /* per channel */
    float *shift;              /* per channel, all terms' shifts summed */
    int terms;
    Py_ssize_t channels;
    float alpha;
    int elu;
    float *out;
} ApplyJob;

CLONES
static void apply_rows(void *arg) {
    const ApplyJob *job = arg;
    const Py_ssize_t C = job->channels;
    const float alpha = job->alpha;
    const float *shift = job->shift;
    for (Py_ssize_t t = job->range.begin; t < job->range.end; t++) {
        float *o = job->out + t * C;
        const float *a = job->x[0] + t * C;
        const float *sa = job->scale[0];
        if (job->terms == 2) {
            const float *b = job->x[1] + t * C;
            const float *sb = job->scale[1];
            for (Py_ssize_t c = 0; c < C; c++)
                o[c] = a[c] * sa[c] + b[c] * sb[c] + shift[c];
        } else {
            for (Py_ssize_t c = 0; c < C; c++)
                o[c] = a[c] * sa[c] + shift[c];
        }
        if (job->elu)
            elu_span(o, o, C, alpha);
    }
}

typedef struct {
    Range range;               /* elements */
    const float *x;
    float *out;
    float alpha;
} EluJob;

CLONES
static void elu_range(void *arg) {
    const EluJob *job = arg;
    const Py_ssize_t begin = job->range.begin;
    elu_span(job->out + begin, job->x + begin, job->range.end - begin, job->alpha);
}

typedef struct {
    Range range;               /* elements */
    const float *x;
    double sum, squares;
} MomentsJob;

CLONES
static void moments_range(void *arg) {
    MomentsJob *job = arg;
    double s[8] = {0}, q[8] = {0};
    Py_ssize_t i = job->range.begin;
    for (; i + 8 <= job->range.end; i += 8) {
        for (int j = 0; j < 8; j++) {
            double v = job->x[i + j];
            s[j] += v;
            q[j] += v * v;
        }
    }
    double sum = 0, squares = 0;
    for (; i < job->range.end; i++) {
        double v = job->x[i];
        sum += v;
        squares += v * v;
    }
    for (int j = 0; j < 8; j++) {
        sum += s[j];
        squares += q[j];
    }
    job->sum = sum;
    job->squares = squares;
}

static int thread_count(int threads, Py_ssize_t elements) {
    if (threads < 1 || elements < MIN_PARALLEL)
        return 1;
    return threads > MAX_THREADS ? MAX_THREADS : threads;
}

/* Runs fn on k copies of `job` (`size` bytes, a Range first) whose ranges split [0, n) in
 * order, on k OpenMP threads (at most n), without the GIL; returns k. */
static int run_split(void *jobs, const void *job, size_t size, int k, Py_ssize_t n,
                     void (*fn)(void *)) {
    if (k > n)
        k = n > 0 ? (int)n : 1;
    for (int i = 0; i < k; i++) {
        Range *range = (Range *)((char *)jobs + i * size);
        memcpy(range, job, size);
        range->begin = n * i / k;
        range->end = n * (i + 1) / k;
    }
    Py_BEGIN_ALLOW_THREADS
    #pragma omp parallel for num_threads(k) schedule(static, 1)
    for (int i = 0; i < k; i++)
        fn((char *)jobs + i * size);
    Py_END_ALLOW_THREADS
    return k;
}

static int float_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a float32 buffer", what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(moments_doc,
"moments(x, threads) -> (mean, variance)\n\n"
"Mean and biased variance of a float32 buffer, summed in double: what a one-group\n"
"group norm normalises by. Each thread sums a contiguous range; the ranges' sums are\n"
"added in order, so the result depends on the thread count only through that split.");

static PyObject *moments(PyObject *self, PyObject *args) {
    PyObject *obj;
    int threads;
    if (!PyArg_ParseTuple(args, "Oi:moments", &obj, &threads))
        return NULL;
    Py_buffer view;
    if (float_buffer(obj, &view, 0, "x") < 0)
        return NULL;
    Py_ssize_t n = view.len / 4;
    if (n == 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "moments of an empty buffer");
        return NULL;
    }
    MomentsJob jobs[MAX_THREADS], job = {.x = view.buf};
    int k = run_split(jobs, &job, sizeof job, thread_count(threads, n), n, moments_range);
    PyBuffer_Release(&view);
    double sum = 0, squares = 0;
    for (int i = 0; i < k; i++) {
        sum += jobs[i].sum;
        squares += jobs[i].squares;
    }
    double mean = sum / n;
    double var = squares / n - mean * mean;
    return Py_BuildValue("dd", mean, var > 0 ? var : 0.0);
}

PyDoc_STRVAR(apply_doc,
"apply(out, terms, channels, elu, alpha, threads)\n\n"
"out[t, c] = f(sum over terms of x[t, c] * scale[c] + shift[c]), f the ELU with this alpha\n"
"if elu is true, else the identity. terms: one or two (x, scale, shift) float32 buffers,\n"
"x of out's size, scale and shift of `channels` values; buffers are laid out [T, C].");

static PyObject *apply(PyObject *self, PyObject *args) {
    PyObject *out_obj, *terms_obj;
    Py_ssize_t channels;
    int elu, threads;
    float alpha;
    if (!PyArg_ParseTuple(args, "OOnpfi:apply", &out_obj, &terms_obj, &channels, &elu, &alpha,
                          &threads))
        return NULL;
    if (!PyTuple_Check(terms_obj) || PyTuple_GET_SIZE(terms_obj) < 1
            || PyTuple_GET_SIZE(terms_obj) > MAX_TERMS) {
        PyErr_SetString(PyExc_ValueError, "terms: a tuple of one or two (x, scale, shift)");
        return NULL;
    }
    if (channels < 1) {
        PyErr_SetString(PyExc_ValueError, "channels must be positive");
        return NULL;
    }
    int terms = (int)PyTuple_GET_SIZE(terms_obj);
    Py_buffer views[1 + 3 * MAX_TERMS];
    int held = 0;
    float shift[4096];
    PyObject *result = NULL;
    if (channels > (Py_ssize_t)(sizeof shift / sizeof shift[0])) {
        PyErr_SetString(PyExc_ValueError, "too many channels");
        return NULL;
    }
    if (float_buffer(out_obj, &views[held], 1, "out") < 0)
        return NULL;
    held++;
    Py_ssize_t n = views[0].len / 4;
    if (n % channels != 0) {
        PyErr_SetString(PyExc_ValueError, "out's size is not a multiple of channels");
        goto done;
    }
    ApplyJob job = {.terms = terms, .channels = channels, .alpha = alpha, .elu = elu,
                    .out = views[0].buf, .shift = shift};
    memset(shift, 0, sizeof(float) * channels);
    for (int i = 0; i < terms; i++) {
        PyObject *term = PyTuple_GET_ITEM(terms_obj, i);
        if (!PyTuple_Check(term) || PyTuple_GET_SIZE(term) != 3) {
            PyErr_SetString(PyExc_ValueError, "a term is a tuple (x, scale, shift)");
            goto done;
        }
        for (int j = 0; j < 3; j++) {
            if (float_buffer(PyTuple_GET_ITEM(term, j), &views[held], 0,
                             j == 0 ? "x" : j == 1 ? "scale" : "shift") < 0)
                goto done;
            held++;
            Py_ssize_t want = j == 0 ? n : channels;
            if (views[held - 1].len / 4 != want) {
                PyErr_Format(PyExc_ValueError, "term %d: %s has %zd values, expected %zd", i,
                             j == 0 ? "x" : j == 1 ? "scale" : "shift",
                             views[held - 1].len / 4, want);
                goto done;
            }
        }
        Py_buffer *v = &views[held - 3];
        job.x[i] = v[0].buf;
        job.scale[i] = v[1].buf;
        const float *s = v[2].buf;
        for (Py_ssize_t c = 0; c < channels; c++)
            shift[c] += s[c];
    }
    ApplyJob jobs[MAX_THREADS];
    run_split(jobs, &job, sizeof job, thread_count(threads, n), n / channels, apply_rows);
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    return result;
}

PyDoc_STRVAR(elu_doc,
"elu(out, x, alpha, threads)\n\n"
"out[i] = x[i] if x[i] > 0 else alpha * expm1(x[i]): the ELU of `apply`, on two float32\n"
"buffers of the same size (out may be x). The same bits for any thread count.");

static PyObject *elu(PyObject *self, PyObject *args) {
    PyObject *out_obj, *x_obj;
    float alpha;
    int threads;
    if (!PyArg_ParseTuple(args, "OOfi:elu", &out_obj, &x_obj, &alpha, &threads))
        return NULL;
    Py_buffer out, x;
    if (float_buffer(out_obj, &out, 1, "out") < 0)
        return NULL;
    if (float_buffer(x_obj, &x, 0, "x") < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    PyObject *result = NULL;
    if (x.len != out.len) {
        PyErr_Format(PyExc_ValueError, "x has %zd values, out %zd", x.len / 4, out.len / 4);
    } else {
        Py_ssize_t n = x.len / 4;
        EluJob jobs[MAX_THREADS], job = {.x = x.buf, .out = out.buf, .alpha = alpha};
        if (n > 0)
            run_split(jobs, &job, sizeof job, thread_count(threads, n), n, elu_range);
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"moments", moments, METH_VARARGS, moments_doc},
    {"apply", apply, METH_VARARGS, apply_doc},
    {"elu", elu, METH_VARARGS, elu_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tokpack._kernels",
    "Fused float32 loops for the channels-last SEANet (see _kernels.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
