/*
 * The test bed's pod sandbox process, in the role of Kubernetes' "pause".
 *
 * It holds the pod's namespaces open, reaps zombies (it is PID 1 of the
 * pod's PID namespace when containers share it) and exits with status 0 on
 * SIGTERM or SIGINT, so that StopPodSandbox ends it promptly and cleanly.
 *
 * Built with `gcc -static -O2` so that the image needs no libc.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void exit_cleanly(int signo)
{
	(void)signo;
	_exit(0);
}

static void reap_children(int signo)
{
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void install_handler(int signo, void (*handler)(int))
{
	struct sigaction action;

	memset(&action, 0, sizeof(action));
	action.sa_handler = handler;
	/* SA_NOCLDSTOP: stopped children are not zombies, nothing to reap. */
	action.sa_flags = signo == SIGCHLD ? SA_NOCLDSTOP | SA_RESTART : 0;
	sigemptyset(&action.sa_mask);
	if (sigaction(signo, &action, NULL) < 0)
		exit(1);
}

int main(void)
{
	install_handler(SIGTERM, exit_cleanly);
	install_handler(SIGINT, exit_cleanly);
	install_handler(SIGCHLD, reap_children);

	for (;;)
		pause();
}
