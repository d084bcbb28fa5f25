/* plot.c - accuracy and loss graphs of a training history (cnn/plot.h).
 *
 * PLplot draws each graph with its memcairo driver into an RGB buffer of
 * ours (cairo: antialiased lines, real fonts, no display needed and no file
 * opened by PLplot); cnn_png_write then writes the PNG. Every graph gets a
 * fresh PLplot stream, ended before returning, so a program that uses
 * PLplot itself keeps its own stream.
 */
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/imageio.h"
#include "cnn/plot.h"

#define DRIVER "memcairo"

/* Colour map 0 entries: black, then matplotlib's ten colours ("tab10")
 * for the curves, the first two for train and validation. */
enum { COL_BLACK = 1, COL_TRAIN, COL_VAL, NCOLORS = 10, LEGEND_MAX = 12 };
static const unsigned char tab10[NCOLORS][3] = {
    {0x1f, 0x77, 0xb4}, {0xff, 0x7f, 0x0e}, {0x2c, 0xa0, 0x2c}, {0xd6, 0x27, 0x28},
    {0x94, 0x67, 0xbd}, {0x8c, 0x56, 0x4b}, {0xe3, 0x77, 0xc2}, {0x7f, 0x7f, 0x7f},
    {0xbc, 0xbd, 0x22}, {0x17, 0xbe, 0xcf}};

/* plabort() messages (a recoverable PLplot error) land here instead of on
 * stderr, and fail the graph. */
static char plplot_msg[256];

static void on_plabort(PLCHAR_VECTOR msg) { snprintf(plplot_msg, sizeof plplot_msg, "%s", msg); }

static int have_driver(void)
{
    enum { MAX_DEVICES = 128 };
    const char **menu = malloc(MAX_DEVICES * sizeof *menu);
    const char **names = malloc(MAX_DEVICES * sizeof *names);
    int n = MAX_DEVICES, found = 0;
    if (menu && names) {
        plgDevs(&menu, &names, &n);
        for (int i = 0; i < n && !found; i++)
            found = names[i] && strcmp(names[i], DRIVER) == 0;
    }
    free(menu);
    free(names);
    return found;
}

/* A curve: the finite points of one column against epoch (or any x). */
typedef struct curve {
    const char *label; /* NULL: not in the legend */
    int color;
    int markers;       /* a mark at each point, no line */
    int n;
    PLFLT *x, *y; /* (n) */
} curve;

static void collect(curve *c, const double *x, const double *v, int n)
{
    c->n = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i]) && isfinite(x[i])) {
            c->x[c->n] = x[i];
            c->y[c->n] = v[i];
            c->n++;
        }
}

/* An axis: its range and major ticks every `step`, labelled with
 * `decimals` digits after the point, in scientific notation if `sci`. */
typedef struct axis {
    double lo, hi, step;
    int decimals, sci;
} axis;

/* Range of the x (use_x) or y values of the curves, widened by 5% each
 * side as matplotlib does, with ticks at 1, 2 or 5 times a power of ten,
 * about six of them (whole epochs on x). */
static void axis_fit(const curve *cs, int ncurves, int use_x, axis *a)
{
    double mn = INFINITY, mx = -INFINITY;
    for (int k = 0; k < ncurves; k++)
        for (int i = 0; i < cs[k].n; i++) {
            double v = use_x ? cs[k].x[i] : cs[k].y[i];
            mn = fmin(mn, v);
            mx = fmax(mx, v);
        }
    if (mn > mx) { /* nothing to plot */
        mn = 0;
        mx = 1;
    }
    const double big = fmax(fabs(mn), fabs(mx));
    double pad = 0.05 * (mx - mn);
    if (mx - mn <= 1e-9 * big) /* one value, give or take rounding */
        pad = use_x ? 0.5 : big > 0 ? 0.05 * big : 0.05;
    a->lo = mn - pad;
    a->hi = mx + pad;
    const double raw = (a->hi - a->lo) / 6, mag = pow(10, floor(log10(raw)));
    const double norm = raw / mag;
    a->step = (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
    if (use_x)
        a->step = fmax(1, round(a->step));
    /* digits the step needs: after the point, or of a mantissa */
    const int step_exp = (int)floor(log10(a->step) + 1e-9);
    a->decimals = step_exp < 0 ? -step_exp : 0;
    a->sci = !use_x && (a->decimals > 6 || big >= 1e6); /* epochs: always whole numbers */
    if (a->sci)
        a->decimals = (int)fmin(10, fmax(0, floor(log10(big)) - step_exp));
}

/* Formats tick value v of a into buf. */
static void format_tick(const axis *a, double v, char *buf, size_t n)
{
    if (fabs(v) < a->step * 1e-6)
        v = 0; /* 1e-17 after summing steps: "-0.00" otherwise */
    snprintf(buf, n, a->sci ? "%.*e" : "%.*f", a->decimals, v);
}

static void tick_label(PLINT axis_id, PLFLT value, char *label, PLINT length, PLPointer data)
{
    format_tick((const axis *)data + (axis_id == PL_Y_AXIS), value, label, (size_t)length);
}

/* Characters in the widest tick label of a. */
static int widest_label(const axis *a)
{
    char buf[64];
    size_t w = 0;
    double v = ceil(a->lo / a->step) * a->step;
    for (int i = 0; i < 100 && v <= a->hi; i++, v += a->step) {
        format_tick(a, v, buf, sizeof buf);
        w = strlen(buf) > w ? strlen(buf) : w;
    }
    return (int)w;
}

/* Corner for the legend that the fewest curve points fall into. Each
 * segment is sampled, so a line crossing the corner counts too. */
static PLINT legend_corner(const curve *cs, int ncurves, int nshown, const axis *x,
                           const axis *y)
{
    static const PLINT corners[4] = {
        PL_POSITION_TOP | PL_POSITION_LEFT, PL_POSITION_TOP | PL_POSITION_RIGHT,
        PL_POSITION_BOTTOM | PL_POSITION_RIGHT, PL_POSITION_BOTTOM | PL_POSITION_LEFT};
    const double bw = 0.36, bh = 0.08 + 0.08 * nshown; /* box, as a fraction of the axes */
    long count[4] = {0};
    for (int k = 0; k < ncurves; k++)
        for (int i = 0; i < cs[k].n; i++) {
            const int last = i + 1 == cs[k].n, steps = last ? 1 : 16;
            for (int s = 0; s < steps; s++) {
                const double t = (double)s / steps;
                const double px = last ? cs[k].x[i] : cs[k].x[i] + t * (cs[k].x[i + 1] - cs[k].x[i]);
                const double py = last ? cs[k].y[i] : cs[k].y[i] + t * (cs[k].y[i + 1] - cs[k].y[i]);
                const double u = (px - x->lo) / (x->hi - x->lo), v = (py - y->lo) / (y->hi - y->lo);
                count[0] += u < bw && v > 1 - bh;
                count[1] += u > 1 - bw && v > 1 - bh;
                count[2] += u > 1 - bw && v < bh;
                count[3] += u < bw && v < bh;
            }
        }
    int best = 0;
    for (int c = 1; c < 4; c++)
        if (count[c] < count[best])
            best = c;
    return corners[best];
}

/* Draws the curves on a fresh PLplot stream into rgb (H, W, 3). */
static void draw(unsigned char *rgb, const char *title, const char *xlabel, const char *ylabel,
                 const curve *cs, int ncurves)
{
    axis ax[2]; /* x, y */
    axis_fit(cs, ncurves, 1, &ax[0]);
    axis_fit(cs, ncurves, 0, &ax[1]);
    PLINT prev, strm;
    plgstrm(&prev);
    plmkstrm(&strm);
    plsdev(DRIVER);
    plsmem(CNN_PLOT_WIDTH, CNN_PLOT_HEIGHT, rgb);
    plscolbg(255, 255, 255);
    plscol0(COL_BLACK, 0, 0, 0);
    for (int c = 0; c < NCOLORS; c++)
        plscol0(COL_TRAIN + c, tab10[c][0], tab10[c][1], tab10[c][2]);
    plinit();
    pladv(0);
    plschr(0, 1.3);

    /* Margins in character heights (a digit is about 0.8 of one wide):
     * the widest y tick label decides how far left the y axis label goes. */
    PLFLT def_ht, ht, px0, px1, py0, py1;
    plgchr(&def_ht, &ht); /* mm */
    plgspa(&px0, &px1, &py0, &py1);
    const double ylabel_disp = 0.8 * widest_label(&ax[1]) + 1.5;
    const double right = fmax(1.5, 0.4 * widest_label(&ax[0]) + 0.5); /* half the last x label */
    plsvpa(ht * (ylabel_disp + 1.2), (px1 - px0) - right * ht, 4.2 * ht, (py1 - py0) - 3.2 * ht);
    plwind(ax[0].lo, ax[0].hi, ax[1].lo, ax[1].hi);
    plcol0(COL_BLACK);
    plwidth(1);
    plslabelfunc(tick_label, ax);
    plbox("bcnto", ax[0].step, 0, "bcntvo", ax[1].step, 0);
    plschr(0, 1.5);
    plmtex("t", 1.2, 0.5, 0.5, title);
    plschr(0, 1.3);
    plmtex("b", 3.0, 0.5, 0.5, xlabel);
    plmtex("l", ylabel_disp, 0.5, 0.5, ylabel);

    PLINT opt[LEGEND_MAX], text_col[LEGEND_MAX], line_col[LEGEND_MAX], line_style[LEGEND_MAX],
        sym_col[LEGEND_MAX], sym_num[LEGEND_MAX];
    PLFLT line_width[LEGEND_MAX], sym_scale[LEGEND_MAX];
    const char *text[LEGEND_MAX], *sym[LEGEND_MAX];
    int nshown = 0;
    for (int k = 0; k < ncurves; k++) {
        if (!cs[k].n)
            continue;
        plcol0(cs[k].color);
        plwidth(2.0);
        if (cs[k].n > 1 && !cs[k].markers)
            plline(cs[k].n, cs[k].x, cs[k].y);
        else { /* a line needs two points: mark the one */
            plschr(0, 2.0);
            plstring(cs[k].n, cs[k].x, cs[k].y, "•");
            plschr(0, 1.3);
        }
        if (!cs[k].label || nshown == LEGEND_MAX)
            continue;
        opt[nshown] = cs[k].markers ? PL_LEGEND_SYMBOL : PL_LEGEND_LINE;
        text_col[nshown] = COL_BLACK;
        line_col[nshown] = sym_col[nshown] = cs[k].color;
        line_style[nshown] = 1;
        line_width[nshown] = 2.0;
        sym_scale[nshown] = 2.0;
        sym_num[nshown] = 1;
        sym[nshown] = "•";
        text[nshown] = cs[k].label;
        nshown++;
    }
    plwidth(1);
    if (nshown) {
        PLFLT lw, lh;
        plcol0(COL_BLACK);
        pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
                 legend_corner(cs, ncurves, nshown, &ax[0], &ax[1]) | PL_POSITION_INSIDE, 0.02,
                 0.03, 0.08, 0, COL_BLACK, 1, 0, 0, nshown, opt, 1.0, 1.0, 2.0, 0.0, text_col,
                 text, NULL, NULL, NULL, NULL, line_col, line_style, line_width, sym_col,
                 sym_scale, sym_num, sym);
    }
    plslabelfunc(NULL, NULL);
    plend1(); /* memcairo copies the picture into rgb here */
    plsstrm(prev);
}

/* The graph of the curves, written as a PNG at path. */
static cnn_status render(const char *path, const char *title, const char *xlabel,
                         const char *ylabel, const curve *cs, int ncurves, cnn_error *err)
{
    unsigned char *rgb = malloc((size_t)CNN_PLOT_WIDTH * CNN_PLOT_HEIGHT * 3);
    if (!rgb)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", path);
    memset(rgb, 255, (size_t)CNN_PLOT_WIDTH * CNN_PLOT_HEIGHT * 3);
    plplot_msg[0] = 0;
    plsabort(on_plabort);
    draw(rgb, title, xlabel, ylabel, cs, ncurves);
    plsabort(NULL);
    cnn_status st;
    if (plplot_msg[0])
        st = cnn_error_set(err, CNN_ERR_IO, "%s: PLplot: %s", path, plplot_msg);
    else
        st = cnn_png_write(path, rgb, CNN_PLOT_WIDTH, CNN_PLOT_HEIGHT, 3, err);
    free(rgb);
    return st;
}

static cnn_status graph(const char *path, const char *title, const char *ylabel,
                        const cnn_history_csv *h, const double *train, const double *val,
                        cnn_error *err)
{
    const size_t n = (size_t)h->n;
    PLFLT *xy = malloc(4 * n * sizeof *xy);
    if (!xy)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", path);
    curve cs[2] = {{"train", COL_TRAIN, 0, 0, xy, xy + n},
                   {"validation", COL_VAL, 0, 0, xy + 2 * n, xy + 3 * n}};
    collect(&cs[0], h->epoch, train, h->n);
    collect(&cs[1], h->epoch, val, h->n);
    cnn_status st = render(path, title, "epoch", ylabel, cs, 2, err);
    free(xy);
    return st;
}

cnn_status cnn_plot_lines(const char *path, const char *title, const char *xlabel,
                          const char *ylabel, const cnn_plot_series *s, int ns, cnn_error *err)
{
    size_t total = 0;
    for (int k = 0; k < ns; k++)
        total += (size_t)(s[k].n > 0 ? s[k].n : 0);
    curve *cs = calloc((size_t)(ns > 0 ? ns : 1), sizeof *cs);
    PLFLT *xy = malloc((2 * total + 1) * sizeof *xy);
    cnn_status st = CNN_OK;
    if (!cs || !xy)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", path);
    else if (!have_driver())
        st = cnn_error_set(err, CNN_ERR_IO,
                           "%s: PLplot has no '%s' driver (Debian package plplot-driver-cairo)",
                           path, DRIVER);
    PLFLT *p = xy;
    for (int k = 0; k < ns && !st; k++) {
        int n = s[k].n > 0 ? s[k].n : 0;
        cs[k] = (curve){s[k].label, COL_TRAIN + k % NCOLORS, s[k].markers, 0, p, p + n};
        collect(&cs[k], s[k].x, s[k].y, n);
        p += 2 * (size_t)n;
    }
    if (!st)
        st = render(path, title, xlabel, ylabel, cs, ns, err);
    free(cs);
    free(xy);
    return st;
}

cnn_status cnn_plot_history(const char *csv_path, const char *out_prefix, cnn_error *err)
{
    cnn_history_csv h;
    cnn_status st = cnn_history_csv_read(&h, csv_path, err);
    if (st)
        return st;
    const size_t len = strlen(out_prefix) + sizeof "-accuracy.png";
    char *path = malloc(len);
    if (!path)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", csv_path);
    else if (!have_driver())
        st = cnn_error_set(err, CNN_ERR_IO,
                           "%s: PLplot has no '%s' driver (Debian package plplot-driver-cairo)",
                           csv_path, DRIVER);
    if (!st) {
        snprintf(path, len, "%s-accuracy.png", out_prefix);
        st = graph(path, "model accuracy", "accuracy", &h, h.accuracy, h.val_accuracy, err);
    }
    if (!st) {
        snprintf(path, len, "%s-loss.png", out_prefix);
        st = graph(path, "model loss", "loss", &h, h.loss, h.val_loss, err);
    }
    free(path);
    cnn_history_csv_free(&h);
    return st;
}
