/* version.c - the library's version at run time (cnn/version.h). */
#include "cnn/version.h"

const char *cnn_version(void) { return CNN_VERSION_STRING; }
