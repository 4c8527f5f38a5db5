# OMIG_CHECK_CRIU: a CRIU >= 4.1 that passes `criu check` (4.2 is needed on kernels >= 6.16 to
# dump TCP sockets; scripts/setup-criu.sh installs one into _deps/criu).
AC_DEFUN([OMIG_CHECK_CRIU], [
    AC_ARG_WITH([criu],
        [AS_HELP_STRING([--with-criu=PATH], [the criu binary to use (default: _deps/criu/sbin/criu, else criu on PATH)])],
        [CRIU=$withval], [CRIU=])
    AS_IF([test -z "$CRIU"], [
        CRIU=`cd "$srcdir" && pwd`/_deps/criu/sbin/criu
        AS_IF([test -x "$CRIU"], [], [CRIU=; AC_PATH_PROG([CRIU], [criu], [no])])
    ])
    AS_IF([test "x$CRIU" = xno || test ! -x "$CRIU"],
        [AC_MSG_ERROR([CRIU not found. Fix: run scripts/setup-criu.sh (installs CRIU >= 4.2 into _deps/criu) or pass --with-criu=PATH])])
    AC_MSG_CHECKING([CRIU version])
    criu_version=`"$CRIU" --version 2>/dev/null | sed -n 's/^Version: *//p'`
    AC_MSG_RESULT([$criu_version ($CRIU)])
    AS_VERSION_COMPARE([$criu_version], [4.1], [AC_MSG_ERROR([CRIU $criu_version is too old (need >= 4.1, 4.2 on kernels >= 6.16). Fix: run scripts/setup-criu.sh])])
    AS_IF([test "`id -u`" = 0], [
        AC_MSG_CHECKING([whether criu check passes])
        AS_IF(["$CRIU" check >/dev/null 2>&1], [AC_MSG_RESULT([yes])],
            [AC_MSG_RESULT([no])
             AC_MSG_ERROR([`$CRIU check` fails on this kernel. Fix: run scripts/setup-criu.sh, which installs a CRIU that works here])])
    ], [AC_MSG_WARN([not root: `criu check` skipped])])
    AC_DEFINE_UNQUOTED([OMIG_CRIU_DEFAULT], ["$CRIU"], [criu binary found at configure time])
    AC_SUBST([CRIU])
])
