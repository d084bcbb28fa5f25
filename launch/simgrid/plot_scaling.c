/* plot_scaling.c - the weak-scaling efficiency of one model against ranks,
 * one curve per exchange, as PNG (PLplot's pngcairo driver).
 *
 *   plot_scaling SCALING.csv MODEL OUT.png
 *
 * SCALING.csv is predict.sh's: model,scaling,exchange,picked,ranks,
 * global_batch,step_ms,compute_ms,wait_ms,efficiency. Rows of MODEL with
 * scaling "weak" and a numeric efficiency are drawn, ranks on a log2 axis.
 */
#include <math.h>
#include <plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_PTS = 64 };
static const char *const exchanges[] = {"auto", "direct", "collective", "hierarchical"};
enum { NEX = 4 };

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: plot_scaling SCALING.csv MODEL OUT.png\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        fprintf(stderr, "plot_scaling: %s: cannot open\n", argv[1]);
        return 2;
    }
    PLFLT x[NEX][MAX_PTS], y[NEX][MAX_PTS];
    int n[NEX] = {0};
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char model[64], scaling[16], ex[32];
        int ranks;
        double eff;
        char *fld[10];
        int k = 0;
        for (char *s = line; k < 10; k++) { /* empty fields kept */
            fld[k] = s;
            char *c = strchr(s, ',');
            if (!c)
                break;
            *c = 0;
            s = c + 1;
        }
        if (k < 9 || sscanf(fld[0], "%63s", model) != 1 || strcmp(model, argv[2]) ||
            sscanf(fld[1], "%15s", scaling) != 1 || strcmp(scaling, "weak") ||
            sscanf(fld[2], "%31s", ex) != 1 || sscanf(fld[4], "%d", &ranks) != 1 ||
            sscanf(fld[9], "%lf", &eff) != 1)
            continue;
        for (int e = 0; e < NEX; e++)
            if (!strcmp(ex, exchanges[e]) && n[e] < MAX_PTS) {
                x[e][n[e]] = log2((double)ranks);
                y[e][n[e]++] = 100.0 * eff;
            }
    }
    fclose(f);
    plsdev("pngcairo");
    plsfnam(argv[3]);
    plspage(0, 0, 800, 600, 0, 0);
    plscolbg(255, 255, 255);
    plscol0(15, 0, 0, 0); /* the axes, labels and legend text: black (15 is white) */
    plinit();
    plcol0(15);
    plenv(0.5, 10.5, 0, 115, 0, 0); /* above 100%: the optimizer works on a shard */
    char title[160];
    snprintf(title, sizeof title, "%s: simulated weak scaling (SimGrid, fat tree, 32 ranks/node)",
             argv[2]);
    pllab("ranks (log2: 1 = 2 ranks, 10 = 1,024)", "efficiency (%)", title);
    const int colors[NEX] = {1, 9, 3, 8}; /* red, blue, green, brown */
    const int styles[NEX] = {1, 2, 3, 4};
    PLINT opt[NEX], tcol[NEX], lcol[NEX], lsty[NEX];
    PLFLT lwid[NEX];
    const char *text[NEX];
    for (int e = 0; e < NEX; e++) {
        plcol0(colors[e]);
        pllsty(styles[e]);
        plwidth(e == 0 ? 3 : 1.5);
        if (n[e] > 1)
            plline(n[e], x[e], y[e]);
        plstring(n[e], x[e], y[e], "#(728)");
        opt[e] = PL_LEGEND_LINE;
        tcol[e] = 15;
        lcol[e] = colors[e];
        lsty[e] = styles[e];
        lwid[e] = e == 0 ? 3 : 1.5;
        text[e] = exchanges[e];
    }
    pllsty(1);
    plwidth(1);
    plcol0(15);
    PLFLT lw, lh;
    pllegend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_BOTTOM | PL_POSITION_LEFT | PL_POSITION_INSIDE,
             0.02, 0.02, 0.1, 0, 15, 1, 0, 0, NEX, opt, 1.0, 1.0, 2.0, 1.0, tcol, text, NULL, NULL,
             NULL, NULL, lcol, lsty, lwid, NULL, NULL, NULL, NULL);
    plend();
    return 0;
}
