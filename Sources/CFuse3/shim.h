// libfuse3's high-level API at the version this project targets.
#define FUSE_USE_VERSION 35
#include <fuse3/fuse.h>
