// libfuse3's low-level (inode-based) API at the version this project targets.
#define FUSE_USE_VERSION 35
#include <fuse3/fuse_lowlevel.h>
