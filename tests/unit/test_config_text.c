/* test_config_text.c - the effective config text that checkpoints store:
 * it parses back to the same sections and values as the overridden config,
 * keeps the file's lines (and comments) where nothing changed, and is the
 * file itself when nothing was overridden. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

/* Every section of a has the same name, keys and values in b, in order. */
static void assert_same_config(const cnn_config *a, const cnn_config *b)
{
    assert_int_equal(a->nsec, b->nsec);
    for (int i = 0; i < a->nsec; i++) {
        const cnn_section *sa = &a->sec[i], *sb = &b->sec[i];
        assert_string_equal(sa->name, sb->name);
        assert_int_equal(sa->nkv, sb->nkv);
        for (int k = 0; k < sa->nkv; k++) {
            const cnn_kv *kb = cnn_section_find(sb, sa->kv[k].key);
            assert_non_null(kb);
            assert_string_equal(sa->kv[k].value, kb->value);
        }
    }
}

/* Parses text, applies the overrides, and checks that the effective text
 * parses back to the overridden config; returns the text (caller frees). */
static char *round_trip(const char *text, const char *const *sets, int nsets)
{
    cnn_config *cfg = NULL, *back = NULL;
    cnn_error err = {0};
    char *out = NULL;
    TU_STATUS(cnn_config_parse_string(&cfg, text, "t.ini", &err), CNN_OK, err);
    for (int i = 0; i < nsets; i++)
        TU_STATUS(cnn_config_override(cfg, sets[i], &err), CNN_OK, err);
    TU_STATUS(cnn_config_text(cfg, &out, &err), CNN_OK, err);
    TU_STATUS(cnn_config_parse_string(&back, out, "t.ini:/config", &err), CNN_OK, err);
    assert_same_config(cfg, back);
    cnn_config_free(cfg);
    cnn_config_free(back);
    return out;
}

#define NET                                                                                       \
    "; a comment that stays\n"                                                                    \
    "[train]\n"                                                                                   \
    "epochs = 5\n"                                                                                \
    "batch_size = 32\n"                                                                           \
    "\n"                                                                                          \
    "[optimizer]\n"                                                                               \
    "type = rmsprop ; inline\n"                                                                   \
    "lr = 0.001\n"                                                                                \
    "[input]\n"                                                                                   \
    "shape = 28x28x1\n"                                                                           \
    "[conv2d]\n"                                                                                  \
    "name = cv1\n"                                                                                \
    "filters = 16\n"                                                                              \
    "kernel = 3\n"                                                                                \
    "[conv2d]\n"                                                                                  \
    "  filters = 16\n"                                                                            \
    "kernel: 3\n"

static void test_untouched_is_the_file(void **state)
{
    (void)state;
    char *t = round_trip(NET, NULL, 0);
    assert_string_equal(t, NET);
    free(t);
}

static void test_changed_keys_in_place(void **state)
{
    (void)state;
    const char *sets[] = {"optimizer.type=sgd", "cv1.filters=8", "conv2d_1.kernel=5",
                          "train.batch_size=64"};
    char *t = round_trip(NET, sets, 4);
    const char *indented[] = {"conv2d_1.filters=4"};
    free(round_trip(NET, indented, 1));
    assert_non_null(strstr(t, "; a comment that stays\n"));
    /* the file's line stays as a comment above the new value */
    assert_non_null(strstr(t, "the file had: type = rmsprop ; inline\ntype = sgd\n"));
    assert_non_null(strstr(t, "filters = 8\n"));
    assert_non_null(strstr(t, "kernel = 5\n"));
    assert_null(strstr(t, "\nbatch_size = 32"));
    assert_non_null(strstr(t, "batch_size = 64\n"));
    /* the other conv2d keeps its 16 filters (an indented key line) */
    assert_non_null(strstr(t, "[conv2d]\n  filters = 16\n"));
    free(t);
}

static void test_added_keys_and_sections(void **state)
{
    (void)state;
    const char *sets[] = {"train.seed=7", "cv1.padding=same", "dist.chunk_size=16",
                          "checkpoint.dir=runs/x"};
    char *t = round_trip(NET, sets, 4);
    /* an added key lands in its own section, before the next header */
    const char *seed = strstr(t, "seed = 7\n"), *opt = strstr(t, "[optimizer]");
    assert_non_null(seed);
    assert_true(seed < opt);
    assert_non_null(strstr(t, "[dist]\nchunk_size = 16\n"));
    assert_non_null(strstr(t, "[checkpoint]\ndir = runs/x\n"));
    free(t);
}

static void test_crlf_and_no_final_newline(void **state)
{
    (void)state;
    const char *text = "[train]\r\nepochs = 2\r\nbatch_size = 4";
    const char *sets[] = {"train.epochs=3"};
    char *t = round_trip(text, sets, 1);
    assert_non_null(strstr(t, "epochs = 3\n"));
    assert_non_null(strstr(t, "batch_size = 4\n"));
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untouched_is_the_file),
        cmocka_unit_test(test_changed_keys_in_place),
        cmocka_unit_test(test_added_keys_and_sections),
        cmocka_unit_test(test_crlf_and_no_final_newline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
