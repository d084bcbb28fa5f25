/* dnn.c - 2-D convolution and matrix products through oneDNN: see dnn.h
 * for the contract.
 *
 * Measured on catsdogs_cnn's and resnet20's 3x3 layers, 1 thread (README,
 * "Convolution"): oneDNN's AVX-512 direct kernels on blocked layouts run
 * at 70-98% of the FMA peak, and still 40-90% with the reorders from and
 * to our NCHW tensors counted; its kernels on plain NCHW fall back to GEMM
 * (10-40%), as do our own shifted/im2col GEMMs through OpenBLAS (8-60%).
 */
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

#include "dnn.h"

/* libgomp's, the OpenMP runtime of Debian's oneDNN (not through <omp.h>,
 * which under clang would be LLVM's): the calling thread's team size. */
void omp_set_num_threads(int n);

enum { PASS_FWD, PASS_BWD_DATA, PASS_BWD_WEIGHTS, NPASS };
/* What an operand holds, so a pass's pointers come by role:
 * X: src or diff_src; W: weights or diff_weights; BIAS: bias or diff_bias;
 * Y: dst or diff_dst. */
enum { ROLE_X, ROLE_W, ROLE_BIAS, ROLE_Y, NROLE };

/* Sub-batches fill about this many floats (input + output), at most
 * MAX_SUB images, a power of two: catsdogs_cnn's layers then go one image
 * at a time, so a reordered output is still in cache; resnet20's 8x8x64
 * layers 8 at a time, so the call overhead is spread. A power of two up to
 * 8 divides every chunk of a multiple of 8 samples (chunk_size 8, 16, 32),
 * so training pads no sub-batch: with 16, fashion_cnn's chunks of 8 each
 * ran as 16 images (4,041 against 7,235 img/s at chunk_size 16). */
#define SUB_FLOATS ((size_t)1 << 19)
#define MAX_SUB 8

/* A primitive with its own part of the scratch (its scratchpad). */
typedef struct prim {
    dnnl_primitive_t p;
    dnnl_memory_desc_t pad; /* its scratchpad; zero size: none */
    size_t pad_off;         /* floats into the pass's scratch */
} prim;

/* One operand of a pass: our layout, the primitive's, and the reorder
 * between them (plain -> want for inputs, want -> plain for outputs). */
typedef struct operand {
    int role, arg, out;
    dnnl_memory_desc_t plain, want;
    int reordered;    /* 0: want == plain, the caller's buffer is used */
    prim reorder;
    size_t off;       /* the want copy, floats into the pass's scratch */
} operand;

typedef struct pass {
    prim conv;
    operand op[NROLE];
    int nop;
    size_t floats; /* scratch of the pass */
} pass;

struct cnn_dnn_conv {
    dnnl_engine_t eng;
    int S;                    /* images per sub-batch */
    size_t in_sz, out_sz;     /* floats per image */
    size_t wsz;               /* kernel floats */
    int use_bias;
    pass pass[NPASS];
    /* The scratch, in floats: x and dy of a padded last sub-batch (S > 1
     * only), dw of a sub-batch, then the current pass's region. */
    size_t stage_in, stage_out, dw_off, pass_off, total;
};

/* Floats of md, rounded up to 64 bytes. */
static size_t md_floats(const dnnl_memory_desc_t *md)
{
    return (dnnl_memory_desc_get_size(md) / sizeof(float) + 15) & ~(size_t)15;
}

/* p->p from pd (destroyed here), its scratchpad appended to *floats. */
static int prim_make(prim *p, dnnl_primitive_desc_t pd, size_t *floats)
{
    const dnnl_memory_desc_t *pad = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    memset(&p->pad, 0, sizeof p->pad);
    if (pad)
        p->pad = *pad;
    p->pad_off = *floats;
    *floats += md_floats(&p->pad);
    int ok = dnnl_primitive_create(&p->p, pd) == dnnl_success;
    if (!ok)
        p->p = NULL;
    dnnl_primitive_desc_destroy(pd);
    return ok;
}

static dnnl_primitive_attr_t user_scratchpad(void)
{
    dnnl_primitive_attr_t a = NULL;
    if (dnnl_primitive_attr_create(&a) != dnnl_success)
        return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user) != dnnl_success) {
        dnnl_primitive_attr_destroy(a);
        return NULL;
    }
    return a;
}

/* Operand `role` of pass p: `arg` in the layout pd chose for `query`
 * (index 1 of the weights queries is the bias). */
static int operand_add(pass *p, dnnl_engine_t eng, int role, int arg, int out,
                       const dnnl_memory_desc_t *plain, const_dnnl_primitive_desc_t pd,
                       dnnl_query_t query, int index)
{
    operand *o = &p->op[p->nop++];
    const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, query, index);
    if (!want)
        return 0;
    o->role = role;
    o->arg = arg;
    o->out = out;
    o->plain = *plain;
    o->want = *want;
    o->reordered = !dnnl_memory_desc_equal(plain, want);
    if (!o->reordered)
        return 1;
    o->off = p->floats;
    p->floats += md_floats(want);
    dnnl_primitive_attr_t attr = user_scratchpad();
    dnnl_primitive_desc_t rpd = NULL;
    int ok = attr && dnnl_reorder_primitive_desc_create(&rpd, out ? want : plain, eng,
                                                        out ? plain : want, eng,
                                                        attr) == dnnl_success;
    dnnl_primitive_attr_destroy(attr);
    return ok && prim_make(&o->reorder, rpd, &p->floats);
}

static void pass_free(pass *p)
{
    dnnl_primitive_destroy(p->conv.p);
    for (int i = 0; i < p->nop; i++)
        if (p->op[i].reordered)
            dnnl_primitive_destroy(p->op[i].reorder.p);
}

void cnn_dnn_conv_free(cnn_dnn_conv *c)
{
    if (!c)
        return;
    for (int i = 0; i < NPASS; i++)
        pass_free(&c->pass[i]);
    dnnl_engine_destroy(c->eng);
    free(c);
}

/* attr plus an eltwise relu after the primitive; 0 if oneDNN refuses.
 * oneDNN's kernel takes max(x, 0) (alpha 0), so a NaN before the relu
 * comes out 0, as in TensorFlow's oneDNN builds, which fuse Conv2D + relu
 * the same way; ours (cnn_activation_apply) keeps NaN. A NaN input is then
 * caught by the gradient check instead of the loss's (trainer.c names the
 * rank either way). A subnormal alpha to get the blend path does not work:
 * under the engine's mode (DAZ) oneDNN's own alpha == 0 test is true. */
static int add_relu(dnnl_primitive_attr_t attr)
{
    dnnl_post_ops_t po = NULL;
    int ok = dnnl_post_ops_create(&po) == dnnl_success &&
             dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f) ==
                 dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    dnnl_post_ops_destroy(po);
    return ok;
}

/* The three passes for sub-batches of c->S images. */
static int make_passes(cnn_dnn_conv *c, const cnn_window *g, int filters, int relu)
{
    const int S = c->S;
    const dnnl_dims_t xd = {S, g->c, g->h, g->w}, wd = {filters, g->c, g->kh, g->kw},
                      bd = {filters}, yd = {S, filters, g->oh, g->ow}, strides = {g->sh, g->sw},
                      pl = {g->pad.top, g->pad.left}, pr = {g->pad.bottom, g->pad.right};
    dnnl_memory_desc_t x, w, b, y, xa, wa, ya;
    if (dnnl_memory_desc_init_by_tag(&x, 4, xd, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_oihw) ||
        dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_x) ||
        dnnl_memory_desc_init_by_tag(&y, 4, yd, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_tag(&xa, 4, xd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&wa, 4, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&ya, 4, yd, dnnl_f32, dnnl_format_tag_any))
        return 0;
    const dnnl_memory_desc_t *bias = c->use_bias ? &b : NULL;
    dnnl_convolution_desc_t fd, dd, wgd;
    if (dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                           &xa, &wa, bias, &ya, strides, pl, pr) ||
        dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &xa, &wa, &ya,
                                                 strides, pl, pr) ||
        dnnl_convolution_backward_weights_desc_init(&wgd, dnnl_convolution_direct, &xa, &wa,
                                                    NULL, &ya, strides, pl, pr))
        return 0;
    dnnl_primitive_attr_t attr = user_scratchpad(), fattr = user_scratchpad();
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    int ok = attr && fattr && (!relu || add_relu(fattr)) &&
             !dnnl_primitive_desc_create(&fpd, &fd, fattr, c->eng, NULL) &&
             !dnnl_primitive_desc_create(&dpd, &dd, attr, c->eng, fpd) &&
             !dnnl_primitive_desc_create(&wpd, &wgd, attr, c->eng, fpd);
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_attr_destroy(fattr);
    pass *f = &c->pass[PASS_FWD], *d = &c->pass[PASS_BWD_DATA], *gw = &c->pass[PASS_BWD_WEIGHTS];
    ok = ok && operand_add(f, c->eng, ROLE_X, DNNL_ARG_SRC, 0, &x, fpd, dnnl_query_src_md, 0) &&
         operand_add(f, c->eng, ROLE_W, DNNL_ARG_WEIGHTS, 0, &w, fpd, dnnl_query_weights_md, 0) &&
         (!bias || operand_add(f, c->eng, ROLE_BIAS, DNNL_ARG_BIAS, 0, &b, fpd,
                               dnnl_query_weights_md, 1)) &&
         operand_add(f, c->eng, ROLE_Y, DNNL_ARG_DST, 1, &y, fpd, dnnl_query_dst_md, 0) &&
         operand_add(d, c->eng, ROLE_Y, DNNL_ARG_DIFF_DST, 0, &y, dpd, dnnl_query_diff_dst_md, 0) &&
         operand_add(d, c->eng, ROLE_W, DNNL_ARG_WEIGHTS, 0, &w, dpd, dnnl_query_weights_md, 0) &&
         operand_add(d, c->eng, ROLE_X, DNNL_ARG_DIFF_SRC, 1, &x, dpd, dnnl_query_diff_src_md, 0) &&
         operand_add(gw, c->eng, ROLE_X, DNNL_ARG_SRC, 0, &x, wpd, dnnl_query_src_md, 0) &&
         operand_add(gw, c->eng, ROLE_Y, DNNL_ARG_DIFF_DST, 0, &y, wpd, dnnl_query_diff_dst_md,
                     0) &&
         operand_add(gw, c->eng, ROLE_W, DNNL_ARG_DIFF_WEIGHTS, 1, &w, wpd,
                     dnnl_query_diff_weights_md, 0);
    dnnl_primitive_desc_t pds[NPASS] = {fpd, dpd, wpd}; /* by PASS_*; prim_make frees them */
    for (int i = 0; i < NPASS; i++) {
        if (ok)
            ok = prim_make(&c->pass[i].conv, pds[i], &c->pass[i].floats);
        else if (pds[i])
            dnnl_primitive_desc_destroy(pds[i]);
    }
    return ok;
}

cnn_status cnn_dnn_conv_create(cnn_dnn_conv **out, const cnn_window *g, int filters, int use_bias,
                               int relu, const char *layer, size_t *scratch_floats,
                               cnn_error *err)
{
    *out = NULL;
    omp_set_num_threads(1);
    cnn_dnn_conv *c = calloc(1, sizeof *c);
    if (!c)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", layer);
    c->in_sz = (size_t)g->c * g->h * g->w;
    c->out_sz = (size_t)filters * g->oh * g->ow;
    c->wsz = (size_t)filters * g->c * g->kh * g->kw;
    c->use_bias = use_bias;
    size_t per = c->in_sz + c->out_sz, s = per ? SUB_FLOATS / per : 1;
    c->S = 1;
    while (c->S * 2 <= MAX_SUB && (size_t)c->S * 2 <= s)
        c->S *= 2;
    if (dnnl_engine_create(&c->eng, dnnl_cpu, 0) != dnnl_success) {
        free(c);
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': oneDNN has no CPU engine", layer);
    }
    if (!make_passes(c, g, filters, relu)) {
        cnn_dnn_conv_free(c);
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s': oneDNN makes no convolution of %d filters %dx%d over "
                             "%dx%dx%d",
                             layer, filters, g->kh, g->kw, g->h, g->w, g->c);
    }
    size_t at = 0, region = 0;
    if (c->S > 1) {
        c->stage_in = at;
        at += (size_t)c->S * c->in_sz;
        c->stage_out = at;
        at += (size_t)c->S * c->out_sz;
    }
    c->dw_off = at;
    at += (c->wsz + 15) & ~(size_t)15;
    for (int i = 0; i < NPASS; i++)
        region = c->pass[i].floats > region ? c->pass[i].floats : region;
    c->pass_off = at;
    c->total = at + region;
    *scratch_floats = c->total;
    *out = c;
    return CNN_OK;
}

static dnnl_memory_t memory_on(dnnl_engine_t eng, const dnnl_memory_desc_t *md, float *p)
{
    dnnl_memory_t m = NULL;
    if (dnnl_memory_create(&m, md, eng, p) != dnnl_success)
        return NULL;
    return m;
}

/* Runs p on engine eng with arguments a[0 .. n), its scratchpad in region. */
static void prim_exec(dnnl_engine_t eng, const prim *p, dnnl_stream_t s, dnnl_exec_arg_t *a,
                      int n, float *region)
{
    dnnl_memory_t pad = NULL;
    if (dnnl_memory_desc_get_size(&p->pad)) {
        pad = memory_on(eng, &p->pad, region + p->pad_off);
        a[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, pad};
    }
    dnnl_primitive_execute(p->p, s, n, a);
    dnnl_stream_wait(s);
    dnnl_memory_destroy(pad);
}

static void reorder_run(const cnn_dnn_conv *c, const operand *o, dnnl_stream_t s,
                        dnnl_memory_t from, dnnl_memory_t to, float *region)
{
    dnnl_exec_arg_t a[3] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    prim_exec(c->eng, &o->reorder, s, a, 2, region);
}

/* Pass p on the caller's NCHW buffers user[role], its copies in region.
 * Execution statuses are not checked: with the primitives made, oneDNN
 * fails here only when out of memory for a memory object's few bytes. */
static void pass_run(const cnn_dnn_conv *c, const pass *p, float *const user[NROLE],
                     float *region)
{
    dnnl_stream_t s = NULL;
    if (dnnl_stream_create(&s, c->eng, dnnl_stream_default_flags) != dnnl_success)
        return;
    dnnl_memory_t mu[NROLE] = {0}, mw[NROLE] = {0};
    dnnl_exec_arg_t a[NROLE + 1];
    for (int i = 0; i < p->nop; i++) {
        const operand *o = &p->op[i];
        mu[i] = memory_on(c->eng, &o->plain, user[o->role]);
        if (o->reordered) {
            mw[i] = memory_on(c->eng, &o->want, region + o->off);
            if (!o->out)
                reorder_run(c, o, s, mu[i], mw[i], region);
        }
        a[i] = (dnnl_exec_arg_t){o->arg, o->reordered ? mw[i] : mu[i]};
    }
    prim_exec(c->eng, &p->conv, s, a, p->nop, region);
    for (int i = 0; i < p->nop; i++) {
        if (p->op[i].reordered && p->op[i].out)
            reorder_run(c, &p->op[i], s, mw[i], mu[i], region);
        dnnl_memory_destroy(mu[i]);
        dnnl_memory_destroy(mw[i]);
    }
    dnnl_stream_destroy(s);
}

/* Images [b0, b0 + r) of v (per floats each) as a whole sub-batch: v itself,
 * or, for a short last one, a zero-padded copy in stage. */
static float *sub_batch(const cnn_dnn_conv *c, const float *v, size_t per, int b0, int r,
                        float *stage)
{
    if (r == c->S)
        return (float *)(v + (size_t)b0 * per);
    memcpy(stage, v + (size_t)b0 * per, (size_t)r * per * sizeof *stage);
    memset(stage + (size_t)r * per, 0, (size_t)(c->S - r) * per * sizeof *stage);
    return stage;
}

void cnn_dnn_conv_forward(const cnn_dnn_conv *c, const float *w, const float *bias,
                          const float *x, float *y, int B, float *scratch)
{
    omp_set_num_threads(1);
    float *region = scratch + c->pass_off;
    for (int b0 = 0; b0 < B; b0 += c->S) {
        const int r = B - b0 < c->S ? B - b0 : c->S;
        float *ys = r == c->S ? y + (size_t)b0 * c->out_sz : scratch + c->stage_out;
        float *user[NROLE] = {sub_batch(c, x, c->in_sz, b0, r, scratch + c->stage_in),
                              (float *)w, (float *)bias, ys};
        pass_run(c, &c->pass[PASS_FWD], user, region);
        if (r < c->S)
            memcpy(y + (size_t)b0 * c->out_sz, ys, (size_t)r * c->out_sz * sizeof *y);
    }
}

void cnn_dnn_conv_backward(const cnn_dnn_conv *c, const float *w, const float *x,
                           const float *dy, float *dw, float *dx, int B, float *scratch,
                           void (*poll)(void *), void *arg)
{
    omp_set_num_threads(1);
    float *region = scratch + c->pass_off, *dws = scratch + c->dw_off;
    for (int b0 = 0; b0 < B; b0 += c->S) {
        const int r = B - b0 < c->S ? B - b0 : c->S;
        float *dys = sub_batch(c, dy, c->out_sz, b0, r, scratch + c->stage_out);
        float *uw[NROLE] = {sub_batch(c, x, c->in_sz, b0, r, scratch + c->stage_in), dws, NULL,
                            dys};
        pass_run(c, &c->pass[PASS_BWD_WEIGHTS], uw, region);
        for (size_t k = 0; k < c->wsz; k++)
            dw[k] += dws[k];
        if (dx) { /* the staged x is no longer needed: a short sub-batch's dx goes there */
            float *dxs = r == c->S ? dx + (size_t)b0 * c->in_sz : scratch + c->stage_in;
            float *ud[NROLE] = {dxs, (float *)w, NULL, dys};
            pass_run(c, &c->pass[PASS_BWD_DATA], ud, region);
            if (r < c->S)
                memcpy(dx + (size_t)b0 * c->in_sz, dxs, (size_t)r * c->in_sz * sizeof *dx);
        }
        if (poll)
            poll(arg);
    }
}

/* ---- matrix products (dense layers) ---------------------------------- */

struct cnn_dnn_matmul {
    dnnl_engine_t eng;
    int S, N, K;
    dnnl_memory_desc_t a, b, c; /* (S, K) ab, (K, N) ab or ba, (S, N) ab */
    prim mm;
    size_t stage_c;          /* a short last block: its rows of a at the scratch's start,
                              * of c from here (floats) */
};

void cnn_dnn_matmul_free(cnn_dnn_matmul *m)
{
    if (!m)
        return;
    dnnl_primitive_destroy(m->mm.p);
    dnnl_engine_destroy(m->eng);
    free(m);
}

cnn_status cnn_dnn_matmul_create(cnn_dnn_matmul **out, int S, int N, int K, int trans_b,
                                 const char *layer, size_t *scratch_floats, cnn_error *err)
{
    *out = NULL;
    omp_set_num_threads(1);
    cnn_dnn_matmul *m = calloc(1, sizeof *m);
    if (!m)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", layer);
    m->S = S;
    m->N = N;
    m->K = K;
    if (dnnl_engine_create(&m->eng, dnnl_cpu, 0) != dnnl_success) {
        free(m);
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': oneDNN has no CPU engine", layer);
    }
    const dnnl_dims_t ad = {S, K}, bd = {K, N}, cd = {S, N};
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    m->stage_c = ((size_t)S * K + 15) & ~(size_t)15;
    size_t floats = m->stage_c + (((size_t)S * N + 15) & ~(size_t)15);
    int ok = !dnnl_memory_desc_init_by_tag(&m->a, 2, ad, dnnl_f32, dnnl_ab) &&
             !dnnl_memory_desc_init_by_tag(&m->b, 2, bd, dnnl_f32, trans_b ? dnnl_ba : dnnl_ab) &&
             !dnnl_memory_desc_init_by_tag(&m->c, 2, cd, dnnl_f32, dnnl_ab) &&
             !dnnl_matmul_desc_init(&md, &m->a, &m->b, NULL, &m->c) &&
             (attr = user_scratchpad()) != NULL &&
             !dnnl_primitive_desc_create(&pd, &md, attr, m->eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (ok)
        ok = prim_make(&m->mm, pd, &floats);
    else if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (!ok) {
        cnn_dnn_matmul_free(m);
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s': oneDNN makes no matrix product (%d x %d) . (%d x %d)",
                             layer, S, K, K, N);
    }
    *scratch_floats = floats;
    *out = m;
    return CNN_OK;
}

void cnn_dnn_matmul_run(const cnn_dnn_matmul *m, const float *a, const float *b, float *c, int M,
                        float *scratch)
{
    omp_set_num_threads(1);
    dnnl_stream_t s = NULL;
    if (dnnl_stream_create(&s, m->eng, dnnl_stream_default_flags) != dnnl_success)
        return;
    const size_t K = (size_t)m->K, N = (size_t)m->N;
    dnnl_memory_t mb = memory_on(m->eng, &m->b, (float *)b);
    for (int r0 = 0; r0 < M; r0 += m->S) {
        const int r = M - r0 < m->S ? M - r0 : m->S;
        const float *ar = a + (size_t)r0 * K;
        float *cr = c + (size_t)r0 * N;
        if (r < m->S) { /* a short last block: its rows and zeros */
            float *st = scratch;
            memcpy(st, ar, (size_t)r * K * sizeof *st);
            memset(st + (size_t)r * K, 0, (size_t)(m->S - r) * K * sizeof *st);
            ar = st;
            cr = scratch + m->stage_c;
        }
        dnnl_memory_t ma = memory_on(m->eng, &m->a, (float *)ar);
        dnnl_memory_t mc = memory_on(m->eng, &m->c, cr);
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        prim_exec(m->eng, &m->mm, s, args, 3, scratch);
        dnnl_memory_destroy(ma);
        dnnl_memory_destroy(mc);
        if (r < m->S)
            memcpy(c + (size_t)r0 * N, cr, (size_t)r * N * sizeof *c);
    }
    dnnl_memory_destroy(mb);
    dnnl_stream_destroy(s);
}
