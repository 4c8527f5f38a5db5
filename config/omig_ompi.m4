# OMIG_CHECK_OMPI: the installed Open MPI (compiler wrapper, version, component directory).
AC_DEFUN([OMIG_CHECK_OMPI], [
    AC_ARG_VAR([MPICC], [Open MPI's C compiler wrapper])
    AC_PATH_PROGS([MPICC], [mpicc], [no])
    AC_PATH_PROGS([OMPI_INFO], [ompi_info], [no])
    AS_IF([test "x$MPICC" = xno || test "x$OMPI_INFO" = xno],
        [AC_MSG_ERROR([Open MPI not found (mpicc, ompi_info). Fix: apt-get install openmpi-bin libopenmpi-dev (or run scripts/setup.sh)])])
    AC_MSG_CHECKING([Open MPI version])
    OMPI_VERSION=`$OMPI_INFO --version 2>/dev/null | sed -n 's/^Open MPI v//p'`
    AC_MSG_RESULT([$OMPI_VERSION])
    AS_CASE([$OMPI_VERSION], [4.1.*], [],
        [AC_MSG_ERROR([Open MPI $OMPI_VERSION is not supported: this plugin uses 4.1's private PML/BTL structures. Fix: install Debian 12's Open MPI 4.1.4])])
    OMPI_CPPFLAGS=`$MPICC --showme:compile`
    OMPI_LIBDIR=`$MPICC --showme:libdirs | cut -d' ' -f1`
    OMPI_COMPONENT_DIR=`$OMPI_INFO --parsable --path pkglibdir | sed -n 's/^path:pkglibdir://p'`
    AS_IF([test -f "$OMPI_COMPONENT_DIR/mca_pml_ob1.so"], [],
        [AC_MSG_ERROR([Open MPI's component directory $OMPI_COMPONENT_DIR has no mca_pml_ob1.so. Fix: reinstall openmpi-bin])])
    AS_IF([$MPICC --showme:version 2>&1 | grep -q 'Open MPI'], [],
        [AC_MSG_ERROR([$MPICC is not Open MPI's wrapper])])
    AC_SUBST([OMPI_VERSION])
    AC_SUBST([OMPI_CPPFLAGS])
    AC_SUBST([OMPI_LIBDIR])
    AC_SUBST([OMPI_COMPONENT_DIR])
    AC_DEFINE_UNQUOTED([OMIG_OMPI_COMPONENT_DIR], ["$OMPI_COMPONENT_DIR"], [Open MPI's own component directory])
    AC_DEFINE_UNQUOTED([OMIG_OMPI_VERSION], ["$OMPI_VERSION"], [Open MPI version built against])
])

# OMIG_CHECK_OMPI_SOURCE: the exact source of the installed Open MPI, for component-private
# headers (pml_ob1.h, btl_tcp.h...) that libopenmpi-dev does not ship. Never copied into the repo.
AC_DEFUN([OMIG_CHECK_OMPI_SOURCE], [
    AC_ARG_WITH([ompi-source],
        [AS_HELP_STRING([--with-ompi-source=DIR], [source tree of the installed Open MPI (default: _deps/src/openmpi-VERSION, fetched by scripts/setup.sh)])],
        [OMPI_SRC=$withval], [OMPI_SRC=`cd "$srcdir" && pwd`/_deps/src/openmpi-$OMPI_VERSION])
    AC_MSG_CHECKING([for Open MPI $OMPI_VERSION source])
    AS_IF([test -f "$OMPI_SRC/VERSION" && test -f "$OMPI_SRC/ompi/mca/pml/ob1/pml_ob1.h"], [],
        [AC_MSG_RESULT([no])
         AC_MSG_ERROR([no Open MPI source at $OMPI_SRC. Fix: run scripts/setup.sh (fetches Debian's source package of the installed version) or pass --with-ompi-source=DIR])])
    src_version=`. "$OMPI_SRC/VERSION" 2>/dev/null; echo "$major.$minor.$release"`
    AS_IF([test "x$src_version" = "x$OMPI_VERSION"], [AC_MSG_RESULT([$OMPI_SRC])],
        [AC_MSG_RESULT([version $src_version])
         AC_MSG_ERROR([the Open MPI source at $OMPI_SRC is $src_version but $OMPI_VERSION is installed; private structures would not match. Fix: rm -rf $OMPI_SRC and run scripts/setup.sh])])
    AC_SUBST([OMPI_SRC])
])
