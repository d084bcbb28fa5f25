# The smpirun settings of every simulated step (sourced by predict.sh and
# tests/simgrid/simgrid_test.sh): smpi_flags=(...).
#
# smpi/simulate-computation:no with host-speed 1Gf: only the compute that
# step_sim.c injects with smpi_execute() takes simulated time.
# smpi/test:1e-7 and smpi/grow-injected-times:no: each MPI_Test or
# MPI_Testall costs a constant 0.1 us. SimGrid 3.32's default grows the
# injected time by one more smpi/test for every MPI_Test that fails in a
# row, with one counter shared by all the simulated ranks; the exchange
# polls once per sample of backward, so the simulated step grew with the
# square of ranks x polls: resnet20_cifar10 at 32 ranks, 32 samples per
# rank, direct, gave a 414 s step for 0.11 s of compute (0.112 s with a
# constant cost).
# smpi/coll-selector:ompi: the blocking collectives take Open MPI's
# algorithms (the step's sum of figures and gather of parameter shards,
# run blocking by smpi_shim.h).
# network/crosstraffic:0: no reverse (TCP acknowledgement) flow beside each
# message. With it, SimGrid 3.32's bandwidth solver crashes once a bucket
# puts P (P - 1) flows in flight (direct and collective: SIGSEGV in
# MaxMin::do_solve at 128 ranks, an abort at 256); without it they run to
# 256 (at 512 the solver still aborts: predict.sh, SIM_FLAT_MAX). The
# platform is an HPC fabric (RDMA), where no acknowledgement stream shares
# the links.
# smpi/send-is-detached-thresh:0: no send is detached. SimGrid 3.32 keeps
# the detached sends on one list and walks it to remove each one that
# completes, so a step cost the simulator O(sends^2): fashion_cnn, auto,
# 512 ranks took 305 s of CPU with SMPI's default (64 KiB), 39 s without,
# and the step time changed by 1 in 8,000 (8.3702 against 8.3713 ms).
smpi_flags=(--cfg=smpi/coll-selector:ompi --cfg=smpi/host-speed:1Gf --cfg=smpi/simulate-computation:no
            --cfg=smpi/test:1e-7 --cfg=smpi/grow-injected-times:no
            --cfg=network/crosstraffic:0 --cfg=smpi/send-is-detached-thresh:0
            --log=root.thres:critical)
