# find_package(cnn) for libcnn, installed by cnn-train: defines the
# imported target cnn::cnn (the shared library and its include directory).
#   find_package(cnn 0.1 REQUIRED)
#   target_link_libraries(app PRIVATE cnn::cnn)
include("${CMAKE_CURRENT_LIST_DIR}/cnnTargets.cmake")
