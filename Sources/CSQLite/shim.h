#ifndef LACQUER_CSQLITE_SHIM_H
#define LACQUER_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
