// corosync's client libraries: CPG (closed process groups, total-order multicast), quorum and cmap, as the original
// pmxcfs uses them for replication.
#include <corosync/corotypes.h>
#include <corosync/cpg.h>
#include <corosync/quorum.h>
#include <corosync/cmap.h>
