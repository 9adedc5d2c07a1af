#include <shoal/shoal.h>
#include <stdio.h>

int main(void) {
  shoal_options opt;
  shoal_comm* comm = NULL;
  shoal_status s;
  shoal_options_init(&opt);
  opt.coordinator_port = 1; /* nothing listens there */
  opt.timeout_ms = 2000;
  s = shoal_comm_create(&opt, &comm);
  printf("%s\n", shoal_strerror(s));
  return s == SHOAL_ERR_COORDINATOR_LOST ? 0 : 1;
}
