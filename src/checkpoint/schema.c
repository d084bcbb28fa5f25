/* schema.c - the tables of the checkpoint layout (see schema.h). */
#include <math.h>
#include <stddef.h>

#include "schema.h"

const cnn_h5_field ckpt_state_fields[] = {
    {"epoch", offsetof(cnn_train_state, epoch), CNN_H5_I64},
    {"step", offsetof(cnn_train_state, step), CNN_H5_I64},
    {"global_step", offsetof(cnn_train_state, global_step), CNN_H5_I64},
    {"samples_seen", offsetof(cnn_train_state, samples_seen), CNN_H5_I64},
    {"seed", offsetof(cnn_train_state, seed), CNN_H5_U64},
    {"world", offsetof(cnn_train_state, world), CNN_H5_I32},
    {"best_val_accuracy", offsetof(cnn_train_state, best_val_accuracy), CNN_H5_F64},
    {"epoch_loss_sum", offsetof(cnn_train_state, epoch_loss_sum), CNN_H5_F64},
    {"epoch_correct", offsetof(cnn_train_state, epoch_correct), CNN_H5_F64},
    {"epoch_count", offsetof(cnn_train_state, epoch_count), CNN_H5_F64},
};
const int ckpt_nstate_fields = sizeof ckpt_state_fields / sizeof *ckpt_state_fields;
_Static_assert(sizeof(int) == 4 && sizeof(double) == 8, "/state's int32 and float64");

const cnn_h5_field ckpt_callback_fields[] = {
    {"es_best", offsetof(cnn_callback_state, es_best), CNN_H5_F64},
    {"es_wait", offsetof(cnn_callback_state, es_wait), CNN_H5_I64},
    {"es_best_epoch", offsetof(cnn_callback_state, es_best_epoch), CNN_H5_I64},
    {"es_stopped_epoch", offsetof(cnn_callback_state, es_stopped_epoch), CNN_H5_I64},
    {"rp_best", offsetof(cnn_callback_state, rp_best), CNN_H5_F64},
    {"rp_wait", offsetof(cnn_callback_state, rp_wait), CNN_H5_I64},
    {"rp_cooldown", offsetof(cnn_callback_state, rp_cooldown), CNN_H5_I64},
    {"lr_scale", offsetof(cnn_callback_state, lr_scale), CNN_H5_F64},
    {"has_best_weights", offsetof(cnn_callback_state, has_best_weights), CNN_H5_I32},
};
const int ckpt_ncallback_fields = sizeof ckpt_callback_fields / sizeof *ckpt_callback_fields;

cnn_callback_state cnn_callback_state_init(void)
{
    return (cnn_callback_state){.es_best = NAN, .rp_best = NAN, .lr_scale = 1.0};
}

const cnn_h5_field ckpt_history_columns[] = {
    {"epoch", offsetof(cnn_epoch_record, epoch), CNN_H5_I64},
    {"loss", offsetof(cnn_epoch_record, loss), CNN_H5_F64},
    {"accuracy", offsetof(cnn_epoch_record, accuracy), CNN_H5_F64},
    {"val_loss", offsetof(cnn_epoch_record, val_loss), CNN_H5_F64},
    {"val_accuracy", offsetof(cnn_epoch_record, val_accuracy), CNN_H5_F64},
    {"lr", offsetof(cnn_epoch_record, lr), CNN_H5_F64},
    {"seconds", offsetof(cnn_epoch_record, seconds), CNN_H5_F64},
    {"images_per_sec", offsetof(cnn_epoch_record, images_per_sec), CNN_H5_F64},
};
const int ckpt_nhistory_columns = sizeof ckpt_history_columns / sizeof *ckpt_history_columns;
_Static_assert(sizeof(double) == 8 && sizeof(int64_t) == 8, "history columns are 8 bytes");
