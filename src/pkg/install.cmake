# Installation and packaging, included at the end of the top-level
# CMakeLists.txt once every target exists:
#   cmake --install build --prefix PREFIX
# gives
#   PREFIX/bin/                      the programs (libcnn linked in statically)
#   PREFIX/lib/libcnn.so             everything a program needs, as one shared library
#   PREFIX/include/cnn/              its public headers, with the generated cnn/version.h
#   PREFIX/lib/pkgconfig/cnn.pc      pkg-config --cflags --libs cnn
#   PREFIX/lib/cmake/cnn/            find_package(cnn) -> target cnn::cnn
#   PREFIX/share/cnn-train/          configs/ and launch/ (slurm.sbatch, mpirun-flags.sh)
#   PREFIX/share/modulefiles/cnn-train/VERSION.lua   for Lmod: module load cnn-train
# The layout is fixed (lib, not lib64 or a multiarch directory) so that the
# pkg-config file, the CMake package and the modulefile find each other
# wherever PREFIX is.
set(CNN_PKG ${PROJECT_SOURCE_DIR}/src/pkg)

# cnn/version.h in the build tree, for the programs and the headers.
configure_file(${CNN_PKG}/version.h.in ${PROJECT_BINARY_DIR}/generated/cnn/version.h @ONLY)
target_include_directories(cnn PUBLIC $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>)
target_sources(cnn PRIVATE ${CNN_PKG}/version.c)
target_include_directories(cnn-bench-exchange PRIVATE ${PROJECT_BINARY_DIR}/generated
                                                      ${PROJECT_SOURCE_DIR}/src/cli)

# libcnn.so: the objects of the static libraries (engine, config, data,
# checkpoints, plots, the MPI module and training), compiled as position-
# independent code, which leaves their arithmetic, and so the results, as
# they were.
set(CNN_LIBS cnn cnn_dist cnn_train cnn_plot)
set_target_properties(${CNN_LIBS} PROPERTIES POSITION_INDEPENDENT_CODE ON)
add_library(cnn_shared SHARED $<TARGET_OBJECTS:cnn> $<TARGET_OBJECTS:cnn_dist>
                              $<TARGET_OBJECTS:cnn_train> $<TARGET_OBJECTS:cnn_plot>)
set_target_properties(cnn_shared PROPERTIES OUTPUT_NAME cnn EXPORT_NAME cnn
                      VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR})
target_include_directories(cnn_shared PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
                           $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>
                           $<INSTALL_INTERFACE:include>)
target_link_libraries(cnn_shared PRIVATE PkgConfig::OPENBLAS PkgConfig::INIH PkgConfig::STB PkgConfig::JPEG
                      PkgConfig::PLPLOT ZLIB::ZLIB MPI::MPI_C ${HDF5_LIBRARIES} m
                      ${CNN_DNNL_LIBRARY} ${CNN_GOMP_LIBRARY})

install(TARGETS cnn-train cnn-tune cnn-bench cnn-layer-bench cnn-predict cnn-data cnn-plot
        cnn-bench-exchange
        RUNTIME DESTINATION bin)
install(TARGETS cnn_shared EXPORT cnnTargets LIBRARY DESTINATION lib
        INCLUDES DESTINATION include)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/cnn DESTINATION include)
install(FILES ${PROJECT_BINARY_DIR}/generated/cnn/version.h DESTINATION include/cnn)

# pkg-config: paths relative to the .pc file, so PREFIX may move.
configure_file(${CNN_PKG}/cnn.pc.in ${PROJECT_BINARY_DIR}/generated/cnn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/generated/cnn.pc DESTINATION lib/pkgconfig)

# find_package(cnn [VERSION]) -> cnn::cnn
include(CMakePackageConfigHelpers)
install(EXPORT cnnTargets NAMESPACE cnn:: DESTINATION lib/cmake/cnn)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/generated/cnnConfigVersion.cmake
                                 COMPATIBILITY SameMajorVersion)
install(FILES ${CNN_PKG}/cnnConfig.cmake ${PROJECT_BINARY_DIR}/generated/cnnConfigVersion.cmake
        DESTINATION lib/cmake/cnn)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/configs DESTINATION share/cnn-train)
install(PROGRAMS ${PROJECT_SOURCE_DIR}/launch/slurm.sbatch ${PROJECT_SOURCE_DIR}/launch/mpirun-flags.sh
        DESTINATION share/cnn-train/launch)

# The modulefile names PREFIX, known only when installing (cmake --install
# --prefix), so it is written then.
install(CODE "
  set(CNN_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  set(mf \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/share/modulefiles/cnn-train/${PROJECT_VERSION}.lua\")
  message(STATUS \"Installing: \${mf}\")
  configure_file(\"${CNN_PKG}/modulefile.lua.in\" \"\${mf}\" @ONLY)
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${mf}\")
")
