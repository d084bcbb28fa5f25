/* test_tune.c - cnn-tune's plain parts: the [search] syntax and its
 * errors, random points (ranges, steps, log sampling, determinism), the
 * grid's order, Keras Tuner's Hyperband arithmetic against the Hyperband
 * paper's table, the result files that resuming reads, the executions'
 * seeds, and the graphs and budget of --summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stb_image.h>
#include <unistd.h>

#include "cnn/plot.h"
#include "cnn/tune.h"
#include "testutil.h"

static cnn_tune_hp parse_ok(const char *v)
{
    cnn_tune_hp hp;
    cnn_error err = {0};
    memset(&hp, 0, sizeof hp);
    cnn_status st = cnn_tune_hp_parse(&hp, v, "t.ini:3: [search] x.y", &err);
    if (st)
        fail_msg("'%s': %s", v, err.msg);
    return hp;
}

static void parse_bad(const char *v, const char *msg)
{
    cnn_tune_hp hp;
    cnn_error err = {0};
    assert_int_equal(cnn_tune_hp_parse(&hp, v, "t.ini:3: [search] x.y", &err), CNN_ERR_CONFIG);
    if (!strstr(err.msg, msg) || strncmp(err.msg, "t.ini:3: [search] x.y: ", 23))
        fail_msg("'%s': message '%s' lacks '%s'", v, err.msg, msg);
}

static void test_parse(void **state)
{
    (void)state;
    cnn_tune_hp h = parse_ok("float(1e-4, 1e-2, sampling=log)");
    assert_int_equal(h.kind, CNN_HP_FLOAT);
    TU_NEAR(h.min, 1e-4, 0);
    TU_NEAR(h.max, 1e-2, 0);
    assert_true(h.log);
    assert_true(h.step == 0);
    h = parse_ok(" int( 16 , 64, step=16 ) ");
    assert_int_equal(h.kind, CNN_HP_INT);
    assert_true(h.min == 16 && h.max == 64 && h.step == 16 && !h.log);
    h = parse_ok("int(1, 5)");
    assert_true(h.step == 1);
    h = parse_ok("choice(64, 128, relu)");
    assert_int_equal(h.nchoices, 3);
    assert_string_equal(h.choices[2], "relu");
    h = parse_ok("boolean()");
    assert_int_equal(h.nchoices, 2);
    assert_string_equal(h.choices[0], "false");
    h = parse_ok("fixed(0.5)");
    assert_int_equal(h.kind, CNN_HP_FIXED);
    parse_bad("float(1, 0)", "min 1 is above max 0");
    parse_bad("float(0, 1, sampling=log)", "needs min > 0");
    parse_bad("float(0, 1, sampling=cubic)", "sampling must be linear or log");
    parse_bad("int(1.5, 4)", "'1.5' is not an integer");
    parse_bad("int(1, 4, step=0)", "step must be a positive integer");
    parse_bad("int(2, 64, step=1, sampling=log)", "it must be above 1");
    parse_bad("float(1)", "needs min and max");
    parse_bad("float(1, 2, 3)", "takes min, max");
    parse_bad("float(1, 2, steps=1)", "no keyword 'steps'");
    parse_bad("choice()", "at least one value");
    parse_bad("choice(1,,2)", "an empty value");
    parse_bad("choice(a, a)", "'a' appears twice");
    parse_bad("boolean(1)", "takes no values");
    parse_bad("fixed(1, 2)", "takes one value");
    parse_bad("uniform(0, 1)", "unknown hyper-parameter type 'uniform'");
    parse_bad("float(0, 1", "expected float(...)");
    parse_bad("0.1", "expected float(...)");
}

static void test_space_read(void **state)
{
    (void)state;
    cnn_config *cfg = NULL;
    cnn_error err = {0};
    cnn_tune_space sp;
    const char *text = "[train]\nepochs = 1\n[search]\noptimizer.lr = float(0.1, 1)\n"
                       "dense.units = choice(8, 16)\nbad = int(1, 2)\n";
    assert_int_equal(cnn_config_parse_string(&cfg, text, "s.ini", &err), CNN_OK);
    assert_int_equal(cnn_tune_space_read(&sp, cfg, &err), CNN_ERR_CONFIG);
    assert_string_equal(err.msg, "s.ini:6: [search] bad: the key must be section.key as for "
                                 "--set (e.g. optimizer.lr)");
    cnn_config_free(cfg);
    assert_int_equal(cnn_config_parse_string(&cfg, "[search]\nx.y = int(1, 3)\n[search]\n", "d.ini",
                                             &err),
                     CNN_ERR_CONFIG); /* a singleton section: once */
    assert_non_null(strstr(err.msg, "appears twice"));
}

static cnn_tune_space space_of(int n, const char *const *values)
{
    cnn_tune_space sp;
    memset(&sp, 0, sizeof sp);
    sp.n = n;
    for (int j = 0; j < n; j++) {
        sp.hp[j] = parse_ok(values[j]);
        snprintf(sp.hp[j].name, sizeof sp.hp[j].name, "s.k%d", j);
    }
    return sp;
}

static void test_sample(void **state)
{
    (void)state;
    const char *v[] = {"float(1e-4, 1e-2, sampling=log)", "int(32, 128, step=16)",
                       "choice(3, 5)", "int(32, 256, step=2, sampling=log)", "float(0, 0.5)"};
    cnn_tune_space sp = space_of(5, v);
    int seen16[7] = {0}, low = 0, n = 2000, pow2[4] = {0};
    for (int i = 0; i < n; i++) {
        cnn_tune_point p, q;
        cnn_tune_sample(&sp, 7, (uint64_t)i, 0, &p);
        cnn_tune_sample(&sp, 7, (uint64_t)i, 0, &q);
        assert_true(cnn_tune_point_equal(&sp, &p, &q)); /* a pure function */
        double lr = atof(p.v[0]);
        assert_true(lr >= 1e-4 && lr <= 1e-2);
        low += lr < 1e-3; /* log-uniform: half the draws below the geometric mean */
        long f = atol(p.v[1]);
        assert_true(f >= 32 && f <= 128 && f % 16 == 0);
        seen16[(f - 32) / 16]++;
        assert_true(!strcmp(p.v[2], "3") || !strcmp(p.v[2], "5"));
        long u = atol(p.v[3]);
        int k = u == 32 ? 0 : u == 64 ? 1 : u == 128 ? 2 : u == 256 ? 3 : -1;
        assert_true(k >= 0);
        pow2[k]++;
        double r = atof(p.v[4]);
        assert_true(r >= 0 && r < 0.5);
    }
    assert_true(low > n * 0.45 && low < n * 0.55);
    for (int i = 0; i < 7; i++) /* 32, 48, ..., 128 all drawn, about equally */
        assert_true(seen16[i] > n / 7 * 0.8 && seen16[i] < n / 7 * 1.2);
    for (int i = 0; i < 4; i++)
        assert_true(pow2[i] > n / 4 * 0.8);
    /* another seed, other points */
    cnn_tune_point a, b;
    cnn_tune_sample(&sp, 7, 0, 0, &a);
    cnn_tune_sample(&sp, 8, 0, 0, &b);
    assert_false(cnn_tune_point_equal(&sp, &a, &b));
}

static void test_grid(void **state)
{
    (void)state;
    const char *v[] = {"choice(a, b)", "int(1, 3)", "float(0.1, 0.3, step=0.1)"};
    cnn_tune_space sp = space_of(3, v);
    assert_int_equal(cnn_tune_grid_size(&sp), 2 * 3 * 3);
    cnn_tune_point p;
    cnn_tune_grid_point(&sp, 0, &p);
    assert_string_equal(p.v[0], "a");
    assert_string_equal(p.v[1], "1");
    assert_string_equal(p.v[2], "0.1");
    cnn_tune_grid_point(&sp, 1, &p); /* the last varies fastest */
    assert_string_equal(p.v[2], "0.2");
    cnn_tune_grid_point(&sp, 17, &p);
    assert_string_equal(p.v[0], "b");
    assert_string_equal(p.v[1], "3");
    assert_string_equal(p.v[2], "0.3"); /* not 0.30000000000000004 */
    const char *w[] = {"float(0, 1)"};
    cnn_tune_space nogrid = space_of(1, w);
    assert_int_equal(cnn_tune_grid_size(&nogrid), 0);
}

/* Li et al., "Hyperband" (JMLR 2018), table 1: R = 81, eta = 3. Keras
 * Tuner's formulas give the paper's first rounds (n_0 = 81, 34, 15, 8, 5)
 * and every r_i, but round up where the paper rounds down in the later
 * rounds (ceil(n_0 / eta^i) scaled per bracket: 3 for the paper's 2, ...);
 * these are Keras Tuner's numbers. */
static void test_hyperband(void **state)
{
    (void)state;
    assert_int_equal(cnn_tune_hb_brackets(81, 3), 5);
    static const long n[5][5] = {{5}, {8, 3}, {15, 5, 2}, {34, 12, 4, 2}, {81, 27, 9, 3, 1}};
    static const long r[5][5] = {{81}, {27, 81}, {9, 27, 81}, {3, 9, 27, 81}, {1, 3, 9, 27, 81}};
    for (int b = 0; b < 5; b++)
        for (int i = 0; i <= b; i++) {
            assert_int_equal(cnn_tune_hb_size(81, 3, b, i), n[b][i]);
            assert_int_equal(cnn_tune_hb_epochs(81, 3, b, i), r[b][i]);
        }
    assert_int_equal(cnn_tune_hb_brackets(2, 3), 1);
    assert_int_equal(cnn_tune_hb_brackets(4, 2), 3);
}

static void test_results(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_tune_XXXXXX", tdir[256];
    assert_non_null(mkdtemp(dir));
    const char *v[] = {"float(0.1, 1)", "choice(a, b)"};
    cnn_tune_space sp = space_of(2, v);
    cnn_tune_trial t = {.id = 3, .epochs = 2, .parent = -1, .status = CNN_TRIAL_COMPLETED,
                        .objective = 0.1 + 0.2, .epochs_run = 2, .seconds = 1.5, .ranks = 2};
    strcpy(t.p.v[0], "0.25");
    strcpy(t.p.v[1], "b");
    cnn_error err = {0};
    cnn_tune_trial_dir(tdir, sizeof tdir, dir, 3);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", tdir);
    assert_int_equal(system(cmd), 0);
    int found = 1;
    cnn_tune_trial r = t;
    r.status = CNN_TRIAL_PENDING;
    assert_int_equal(cnn_tune_result_read(dir, &sp, &r, &found, &err), CNN_OK);
    assert_int_equal(found, 0); /* none yet */
    assert_int_equal(cnn_tune_result_write(dir, &sp, &t, &err), CNN_OK);
    assert_int_equal(cnn_tune_result_read(dir, &sp, &r, &found, &err), CNN_OK);
    assert_int_equal(found, 1);
    assert_int_equal(r.status, CNN_TRIAL_COMPLETED);
    assert_true(r.objective == 0.1 + 0.2); /* every bit */
    assert_int_equal(r.ranks, 2);
    assert_int_equal(r.executions, 0);
    /* two executions: their seeds and objectives come back, every bit */
    t.executions = 2;
    t.exec_seed[0] = 42;
    t.exec_seed[1] = cnn_tune_execution_seed(7, 42, 3, 1);
    t.exec_objective[0] = 0.1 + 0.2;
    t.exec_objective[1] = 1.0 / 3;
    assert_int_equal(cnn_tune_result_write(dir, &sp, &t, &err), CNN_OK);
    assert_int_equal(cnn_tune_result_read(dir, &sp, &r, &found, &err), CNN_OK);
    assert_int_equal(r.executions, 2);
    assert_true(r.exec_seed[0] == 42 && r.exec_seed[1] == t.exec_seed[1]);
    assert_true(r.exec_objective[0] == 0.1 + 0.2 && r.exec_objective[1] == 1.0 / 3);
    /* a result of another point is refused */
    cnn_tune_trial o = t;
    strcpy(o.p.v[1], "a");
    assert_int_equal(cnn_tune_result_read(dir, &sp, &o, &found, &err), CNN_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "written by another search"));
    /* a failed trial keeps its message; a damaged file is an error */
    t.status = CNN_TRIAL_FAILED;
    snprintf(t.message, sizeof t.message, "layer 'conv2d': window 30x30 does not fit");
    assert_int_equal(cnn_tune_result_write(dir, &sp, &t, &err), CNN_OK);
    assert_int_equal(cnn_tune_result_read(dir, &sp, &r, &found, &err), CNN_OK);
    assert_int_equal(r.status, CNN_TRIAL_FAILED);
    assert_string_equal(r.message, t.message);
    snprintf(cmd, sizeof cmd, "sed -i '/^objective/d' %.200s/result", tdir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(cnn_tune_result_read(dir, &sp, &r, &found, &err), CNN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "damaged result file"));
    /* the CSV: a header and a row, the message quoted */
    t.message[0] = 0;
    strcpy(t.message, "a, b");
    assert_int_equal(cnn_tune_csv_write(dir, &sp, 0, &t, 1, &err), CNN_OK);
    char path[300], line[512];
    snprintf(path, sizeof path, "%s/trials.csv", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "trial_id,s.k0,s.k1,epochs,objective,status,seconds,ranks,seeds,"
                              "execution_objectives,message\n");
    assert_non_null(fgets(line, sizeof line, f));
    snprintf(path, sizeof path, "3,0.25,b,2,,failed,1.500,2,42 %llu,"
             "0.30000000000000004 0.33333333333333331,\"a, b\"\n",
             (unsigned long long)t.exec_seed[1]);
    assert_string_equal(line, path);
    fclose(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* Execution 0 trains with the trial's [train] seed; the others with seeds
 * of (tune seed, root trial, execution): all different, below 2^30, and
 * the same on every call. */
static void test_execution_seeds(void **state)
{
    (void)state;
    assert_true(cnn_tune_execution_seed(7, 42, 0, 0) == 42);
    assert_true(cnn_tune_execution_seed(8, 43, 5, 0) == 43);
    uint64_t s[3][3];
    for (int root = 0; root < 3; root++)
        for (int k = 1; k < 4; k++) {
            s[root][k - 1] = cnn_tune_execution_seed(7, 42, root, k);
            assert_true(s[root][k - 1] < (1u << 30));
            assert_true(s[root][k - 1] == cnn_tune_execution_seed(7, 42, root, k));
            assert_true(s[root][k - 1] == cnn_tune_execution_seed(7, 99, root, k));
            assert_true(s[root][k - 1] != cnn_tune_execution_seed(8, 42, root, k));
        }
    for (int i = 0; i < 9; i++)
        for (int j = i + 1; j < 9; j++)
            assert_true(s[i / 3][i % 3] != s[j / 3][j % 3]);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* A history.csv of trial id's execution k: val_accuracy v[0..n). */
static void write_history(const char *dir, int id, int k, const double *v, int n)
{
    char path[512], text[1024];
    cnn_tune_trial_dir(path, sizeof path - 40, dir, id);
    snprintf(path + strlen(path), 40, "/exec%d", k);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", path);
    assert_int_equal(system(cmd), 0);
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,"
                                  "images_per_sec\n");
    for (int e = 0; e < n; e++)
        len += (size_t)snprintf(text + len, sizeof text - len, "%d,1.0,0.5,1.0,%.4f,0.001,1,1\n",
                                e, v[e]);
    strcat(path, "/history.csv");
    write_text(path, text);
}

/* The pixels of a graph near colour (r, g, b); checks that the PNG
 * decodes at the promised size on the way. */
static long graph_pixels(const char *path, int r0, int g0, int b0)
{
    int w, h, n;
    if (!stbi_info(path, &w, &h, &n))
        fail_msg("%s: does not decode: %s", path, stbi_failure_reason());
    assert_int_equal(w, CNN_PLOT_WIDTH);
    assert_int_equal(h, CNN_PLOT_HEIGHT);
    unsigned char *px = stbi_load(path, &w, &h, &n, 3);
    assert_non_null(px);
    long count = 0;
    for (long i = 0; i < (long)w * h; i++)
        count += abs(px[3 * i] - r0) < 40 && abs(px[3 * i + 1] - g0) < 40 &&
                 abs(px[3 * i + 2] - b0) < 40;
    stbi_image_free(px);
    return count;
}

#define BLUE 0x1f, 0x77, 0xb4
#define ORANGE 0xff, 0x7f, 0x0e

/* A Hyperband search of 4 trials on disk as cnn-tune leaves it: bracket 1
 * with trial 0 (1 epoch) promoted to trial 2 (epochs 2, 1 inherited) and
 * trial 1 failed; bracket 0 with trial 3 (2 epochs, 2 executions).
 * cnn_tune_plot draws objective.png and one graph per bracket, and
 * --summary prints the budget and draws them again. */
static void test_plots(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_tune_XXXXXX", path[512], paths[2048];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/search.ini", dir);
    write_text(path, "[tune]\nobjective = val_accuracy\nalgorithm = hyperband\nmax_epochs = 2\n"
                     "factor = 2\n[search]\ns.k0 = choice(a, b, c, d)\n");
    const char *v[] = {"choice(a, b, c, d)"};
    cnn_tune_space sp = space_of(1, v);
    cnn_tune_trial t[4];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 4; i++) {
        t[i].id = i;
        t[i].parent = -1;
        t[i].bracket = i < 3;
        t[i].epochs = t[i].epochs_run = 1 + (i >= 2);
        t[i].status = CNN_TRIAL_COMPLETED;
        t[i].ranks = 1;
        t[i].executions = 1;
        t[i].exec_seed[0] = 42;
        snprintf(t[i].p.v[0], sizeof t[i].p.v[0], "%c", "abac"[i]);
    }
    t[0].objective = 0.5;
    t[1].status = CNN_TRIAL_FAILED;
    t[1].objective = NAN;
    t[2].parent = 0;
    t[2].initial_epoch = 1;
    t[2].round = 1;
    t[2].objective = 0.6;
    t[3].executions = 2;
    t[3].exec_seed[1] = cnn_tune_execution_seed(1, 42, 3, 1);
    t[3].objective = 0.55;
    cnn_error err = {0};
    assert_int_equal(cnn_tune_csv_write(dir, &sp, 1, t, 4, &err), CNN_OK);
    write_history(dir, 0, 0, (double[]){0.5}, 1);
    write_history(dir, 2, 0, (double[]){0.5, 0.6}, 2);
    write_history(dir, 3, 0, (double[]){0.4, 0.5}, 2);
    write_history(dir, 3, 1, (double[]){0.5, 0.6}, 2);
    if (cnn_tune_plot(dir, paths, sizeof paths, &err) != CNN_OK)
        fail_msg("cnn_tune_plot: %s", err.msg);
    char want[4096];
    snprintf(want, sizeof want, " %s/objective.png %s/objective-bracket-0.png "
             "%s/objective-bracket-1.png", dir, dir, dir);
    assert_string_equal(paths, want);
    /* objective.png: the trials' marks (blue) and the best so far (orange) */
    snprintf(path, sizeof path, "%s/objective.png", dir);
    assert_true(graph_pixels(path, BLUE) > 100);
    assert_true(graph_pixels(path, ORANGE) > 100);
    /* bracket 1: one line, trial 2's (its history holds trial 0's epoch):
     * blue, and nothing in the second colour */
    snprintf(path, sizeof path, "%s/objective-bracket-1.png", dir);
    assert_true(graph_pixels(path, BLUE) > 100);
    assert_true(graph_pixels(path, ORANGE) < 10);
    snprintf(path, sizeof path, "%s/objective-bracket-0.png", dir);
    assert_true(graph_pixels(path, BLUE) > 100);
    /* --summary: the budget (trial 1 failed: its epoch counts; trial 2
     * trained 1 epoch of its 2; trial 3 2 epochs twice) and the graphs,
     * redrawn */
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/summary.txt", dir);
    FILE *out = fopen(path, "w+");
    assert_non_null(out);
    if (cnn_tune_summary(dir, out, &err) != CNN_OK)
        fail_msg("cnn_tune_summary: %s", err.msg);
    rewind(out);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, out);
    text[n] = 0;
    fclose(out);
    if (!strstr(text, "Budget: 7 epochs trained in 4 trials; the best val_accuracy, 0.600000, "
                      "first reached by trial 2 after 3 epochs\n"))
        fail_msg("no budget line in:\n%s", text);
    snprintf(want, sizeof want, "plots:%s\n", paths);
    assert_non_null(strstr(text, want));
    snprintf(path, sizeof path, "%s/objective-bracket-0.png", dir);
    assert_true(graph_pixels(path, BLUE) > 100);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),   cmocka_unit_test(test_space_read),
        cmocka_unit_test(test_sample),  cmocka_unit_test(test_grid),
        cmocka_unit_test(test_hyperband), cmocka_unit_test(test_results),
        cmocka_unit_test(test_execution_seeds), cmocka_unit_test(test_plots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
