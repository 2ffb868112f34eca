from gradcheck.cli import run

run(prog_name="gradcheck")
