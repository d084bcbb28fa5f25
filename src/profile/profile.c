/* profile.c - per-layer timings, spans and a Chrome trace (cnn/profile.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <immintrin.h>

#include "cnn/json.h"
#include "cnn/profile.h"

typedef struct {
    double t0, dur; /* seconds */
    int what;       /* layer index, or -1 - span */
    int backward;
    int tid;
} event;

typedef struct {
    double sec;
    long calls;
} tally;

struct cnn_profile {
    pthread_mutex_t lock;
    int nlayers;
    tally *fwd, *bwd;              /* (nlayers) */
    tally span[CNN_SPAN_COUNT];
    long steps, images;
    int trace_steps;
    event *ev;
    size_t nev, cap;
    double origin;                 /* trace time 0 */
};

static const char *const span_names[CNN_SPAN_COUNT] = {"step", "data fetch", "exchange wait",
                                                        "optimizer"};

double cnn_profile_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cnn_status cnn_profile_create(cnn_profile **out, const cnn_model *m, int trace_steps,
                              cnn_error *err)
{
    *out = NULL;
    cnn_profile *p = calloc(1, sizeof *p);
    if (!p)
        return cnn_error_set(err, CNN_ERR_NOMEM, "profile: out of memory");
    p->nlayers = m->nlayers;
    p->fwd = calloc((size_t)m->nlayers, sizeof *p->fwd);
    p->bwd = calloc((size_t)m->nlayers, sizeof *p->bwd);
    p->trace_steps = trace_steps > 0 ? trace_steps : 0;
    /* room for the traced steps: each layer twice, the spans, a margin */
    p->cap = (size_t)p->trace_steps * ((size_t)m->nlayers * 2 + 16) * 4;
    p->ev = p->cap ? malloc(p->cap * sizeof *p->ev) : NULL;
    if (!p->fwd || !p->bwd || (p->cap && !p->ev)) {
        cnn_profile_free(p);
        return cnn_error_set(err, CNN_ERR_NOMEM, "profile: out of memory");
    }
    pthread_mutex_init(&p->lock, NULL);
    p->origin = cnn_profile_now();
    *out = p;
    return CNN_OK;
}

void cnn_profile_free(cnn_profile *p)
{
    if (!p)
        return;
    if (p->fwd && p->bwd)
        pthread_mutex_destroy(&p->lock);
    free(p->fwd);
    free(p->bwd);
    free(p->ev);
    free(p);
}

/* A small id per recording thread, in the order threads first record. */
static int thread_id(void)
{
    static _Thread_local int id = -1;
    static int next;
    if (id < 0)
        id = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
    return id;
}

static void record(cnn_profile *p, int what, int backward, double t0, double t1)
{
    if (p->steps >= p->trace_steps || p->nev >= p->cap)
        return;
    p->ev[p->nev++] = (event){.t0 = t0, .dur = t1 - t0, .what = what, .backward = backward,
                              .tid = thread_id()};
}

void cnn_profile_layer(cnn_profile *p, int i, int backward, double t0, double t1)
{
    if (!p || i < 0 || i >= p->nlayers)
        return;
    pthread_mutex_lock(&p->lock);
    tally *t = backward ? &p->bwd[i] : &p->fwd[i];
    t->sec += t1 - t0;
    t->calls++;
    record(p, i, backward, t0, t1);
    pthread_mutex_unlock(&p->lock);
}

/* The model's layer_hook: a layer's start time per thread. */
static void layer_timer(void *arg, int layer, int backward, int end)
{
    static _Thread_local double start;
    if (!end)
        start = cnn_profile_now();
    else
        cnn_profile_layer(arg, layer, backward, start, cnn_profile_now());
}

void cnn_profile_attach(cnn_profile *p, cnn_model *m)
{
    m->layer_hook = p ? layer_timer : NULL;
    m->layer_hook_arg = p;
}

void cnn_profile_span(cnn_profile *p, cnn_span what, double t0, double t1)
{
    if (!p || what < 0 || what >= CNN_SPAN_COUNT)
        return;
    pthread_mutex_lock(&p->lock);
    p->span[what].sec += t1 - t0;
    p->span[what].calls++;
    record(p, -1 - (int)what, 0, t0, t1);
    pthread_mutex_unlock(&p->lock);
}

void cnn_profile_step(cnn_profile *p, long B)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->steps++;
    p->images += B;
    pthread_mutex_unlock(&p->lock);
}

long cnn_profile_steps(const cnn_profile *p) { return p ? p->steps : 0; }

double cnn_profile_span_per_image(const cnn_profile *p, cnn_span what)
{
    return p && p->images ? p->span[what].sec / (double)p->images : 0.0;
}

/* Forward FLOPs of one image through layer l (0: no kernel). */
static double layer_flops(const cnn_layer *l)
{
    double w = 0.0;
    for (int k = 0; k < l->nparams; k++)
        if (l->params[k].ndim >= 2)
            w += (double)l->params[k].count;
    return 2.0 * (double)l->out.h * (double)l->out.w * w;
}

static void print_rate(FILE *f, double flops, double sec, double peak)
{
    if (flops <= 0.0 || sec <= 0.0) {
        fprintf(f, " %8s%s", "-", peak > 0 ? "       " : "");
        return;
    }
    double g = flops / sec * 1e-9;
    fprintf(f, " %8.1f", g);
    if (peak > 0)
        fprintf(f, " %5.1f%%", 100.0 * g / peak);
}

void cnn_profile_print(const cnn_profile *p, const cnn_model *m, double peak, FILE *f)
{
    if (!p || !p->images)
        return;
    const double n = (double)p->images;
    fprintf(f, "profile: %ld steps, %ld images of this rank (under mpirun: rank 0); per image",
            p->steps, p->images);
    if (peak > 0)
        fprintf(f, "; peak %.1f GFLOP/s (one core's FMA, measured now)", peak);
    fprintf(f, "\n%-24s %-22s %9s %9s %8s%s %8s%s\n", "layer", "type", "fwd_us", "bwd_us",
            "fwd_GF/s", peak > 0 ? "  %peak" : "", "bwd_GF/s", peak > 0 ? "  %peak" : "");
    double fsum = 0.0, bsum = 0.0, flops = 0.0;
    for (int i = 0; i < m->nlayers && i < p->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        const double fl = layer_flops(l);
        fprintf(f, "%-24s %-22s %9.2f %9.2f", l->name, l->ops->keras_name, 1e6 * p->fwd[i].sec / n,
                1e6 * p->bwd[i].sec / n);
        print_rate(f, fl * n, p->fwd[i].sec, peak);
        print_rate(f, 2.0 * fl * n, p->bwd[i].sec, peak);
        fputc('\n', f);
        fsum += p->fwd[i].sec;
        bsum += p->bwd[i].sec;
        flops += fl;
    }
    fprintf(f, "%-24s %-22s %9.2f %9.2f", "layers", "", 1e6 * fsum / n, 1e6 * bsum / n);
    print_rate(f, flops * n, fsum, peak);
    print_rate(f, 2.0 * flops * n, bsum, peak);
    fputc('\n', f);
    for (int s = 0; s < CNN_SPAN_COUNT; s++)
        if (p->span[s].calls)
            fprintf(f, "%-24s %9.2f us per image (%ld spans)\n", span_names[s],
                    1e6 * p->span[s].sec / n, p->span[s].calls);
    if (p->span[CNN_SPAN_STEP].calls) {
        double other = p->span[CNN_SPAN_STEP].sec - fsum - bsum;
        for (int s = CNN_SPAN_DATA; s < CNN_SPAN_COUNT; s++)
            other -= p->span[s].sec;
        if (other >= 0) /* spans of several threads can add up to more than the step */
            fprintf(f, "%-24s %9.2f us per image (loss, gradient conversion, bookkeeping)\n",
                    "rest of the step", 1e6 * other / n);
    }
}

cnn_status cnn_profile_write_trace(const cnn_profile *p, const cnn_model *m, const char *path,
                                   int rank, cnn_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write the trace", path);
    fprintf(f, "[\n{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, "
               "\"args\": {\"name\": \"rank %d\"}}",
            rank, rank);
    for (size_t k = 0; p && k < p->nev; k++) {
        const event *e = &p->ev[k];
        fprintf(f, ",\n{\"name\": ");
        if (e->what >= 0) {
            cnn_json_string(f, m->layers[e->what].name);
            fprintf(f, ", \"cat\": \"%s\", \"args\": {\"type\": \"%s\"}",
                    e->backward ? "backward" : "forward", m->layers[e->what].ops->keras_name);
        } else {
            fprintf(f, "\"%s\", \"cat\": \"step\"", span_names[-1 - e->what]);
        }
        fprintf(f, ", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f, \"pid\": %d, \"tid\": %d}",
                1e6 * (e->t0 - p->origin), 1e6 * e->dur, rank, e->tid);
    }
    fprintf(f, "\n]\n");
    if (ferror(f) | fclose(f))
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write the trace", path);
    return CNN_OK;
}

/* Copies the events of one trace file (between its outer brackets). */
static cnn_status copy_events(FILE *out, const char *path, int *first, cnn_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read the trace", path);
    char line[4096];
    int ok = fgets(line, sizeof line, f) && !strcmp(line, "[\n");
    while (ok && fgets(line, sizeof line, f)) {
        if (!strcmp(line, "]\n"))
            break;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len && line[len - 1] == ',')
            line[--len] = '\0';
        fprintf(out, "%s%s", *first ? "" : ",\n", line);
        *first = 0;
    }
    fclose(f);
    return ok ? CNN_OK : cnn_error_set(err, CNN_ERR_FORMAT, "%s: not a cnn-train trace", path);
}

cnn_status cnn_profile_merge_traces(const char *const *paths, int n, const char *out,
                                    cnn_error *err)
{
    FILE *f = fopen(out, "w");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write the trace", out);
    fprintf(f, "[\n");
    int first = 1;
    cnn_status st = CNN_OK;
    for (int i = 0; i < n && !st; i++)
        st = copy_events(f, paths[i], &first, err);
    fprintf(f, "\n]\n");
    if ((ferror(f) | fclose(f)) && !st)
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot write the trace", out);
    return st;
}

/* Independent FMA chains, enough to cover the FMA units' latency. */
enum { CHAINS = 12 };

#if defined(__AVX512F__)
typedef __m512 vec;
#define VLEN 16
#define VSET(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSUM(v) _mm512_reduce_add_ps(v)
#elif defined(__FMA__)
typedef __m256 vec;
#define VLEN 8
#define VSET(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float VSUM(__m256 v)
{
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#define VLEN 0
#endif

#if VLEN
static float fma_loop(long iters, float seed)
{
    vec acc[CHAINS];
    const vec a = VSET(0.999999f), b = VSET(1e-7f);
    for (int k = 0; k < CHAINS; k++)
        acc[k] = VSET(seed + (float)k);
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < CHAINS; k++)
            acc[k] = VFMA(acc[k], a, b);
    float s = 0.0f;
    for (int k = 0; k < CHAINS; k++)
        s += VSUM(acc[k]);
    return s;
}
#endif

double cnn_profile_fma_peak(void)
{
#if VLEN
    volatile float sink = 0.0f;
    long iters = 1 << 16;
    double best = 0.0;
    for (int rep = 0; rep < 8; rep++) {
        double t0 = cnn_profile_now();
        sink += fma_loop(iters, (float)rep);
        double dt = cnn_profile_now() - t0;
        if (dt < 0.005) {
            iters *= 4; /* calibrate to ~5 ms a run, keep the best run */
            continue;
        }
        double g = 2.0 * VLEN * CHAINS * (double)iters / dt * 1e-9;
        if (g > best)
            best = g;
    }
    (void)sink;
    return best;
#else
    return 0.0;
#endif
}
