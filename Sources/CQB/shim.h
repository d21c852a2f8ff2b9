// libqb: the IPC server and client the original pmxcfs's `pve2` service uses.
#include <qb/qbdefs.h>
#include <qb/qbipcs.h>
#include <qb/qbipcc.h>
#include <qb/qbloop.h>
