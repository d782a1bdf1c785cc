"""`python -m demo`: the OCC-MLLM studio web app (see demo/app.py)."""

from demo.app import main

if __name__ == "__main__":
    main()
